"""Per-modality encoders (face, voice, text), their training, evaluation and shared metrics."""
