"""Per-modality stages the scheduler runs each tick (face, voice, text)."""
