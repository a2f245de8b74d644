"""The live demo window (`affectstream demo`): drawing (`overlay`), the rolling history it
draws from (`history`), per-stage taps for the face box and the modality keys (`taps`), and
the OpenCV window loop (`window`)."""
