"""eGeMAPS functionals of an utterance: one of the feature sets the utterance head reads.

The 88 eGeMAPSv02 functionals (pitch, loudness, spectral balance, voice quality and their
statistics over an utterance; Eyben et al. 2016) come from openSMILE through the `opensmile`
wheel, which bundles the binary and its configs (no download). The wheel is under
audEERING's research licence (non-commercial), so it is an optional extra,
`affectstream[egemaps]`, imported only here and only when the branch is used.

`EgemapsExtractor` turns one voiced span (an utterance, not a 2 s tick window) into 88
floats; `utterance.UtteranceHead` reads them.
"""

from __future__ import annotations

import logging

import numpy as np

from affectstream.core.audio import MODEL_SAMPLE_RATE

log = logging.getLogger(__name__)

N_FEATURES = 88  # eGeMAPSv02 functionals
INSTALL_HINT = (
    "the eGeMAPS voice branch needs the opensmile package (audEERING's research licence, "
    "non-commercial): pip install 'affectstream[egemaps]'"
)
# openSMILE needs some audio to produce functionals; shorter spans are zero-padded at the end
MIN_SAMPLES = MODEL_SAMPLE_RATE // 4


def available() -> bool:
    """Whether the `opensmile` package can be imported."""
    try:
        import opensmile  # noqa: F401
    except ImportError:
        return False
    return True


class EgemapsExtractor:
    """eGeMAPSv02 functionals of a mono float32 span at 16 kHz: `(N,) -> (88,)` float32.

    One openSMILE instance; not thread-safe (one per thread or per stage). `feature_set` names
    another openSMILE set (e.g. "ComParE_2016", 6,373 functionals) for the comparison in the
    voice card; the shipped branch reads eGeMAPSv02.
    """

    def __init__(
        self, sample_rate: int = MODEL_SAMPLE_RATE, feature_set: str = "eGeMAPSv02"
    ) -> None:
        try:
            import opensmile
        except ImportError as e:
            raise ImportError(INSTALL_HINT) from e
        self.sample_rate = int(sample_rate)
        self._smile = opensmile.Smile(
            feature_set=getattr(opensmile.FeatureSet, feature_set),
            feature_level=opensmile.FeatureLevel.Functionals,
        )
        self.names: tuple[str, ...] = tuple(self._smile.feature_names)  # 88 for eGeMAPSv02

    def __call__(self, samples: np.ndarray) -> np.ndarray:
        x = np.asarray(samples, dtype=np.float32).reshape(-1)
        if len(x) < MIN_SAMPLES:
            x = np.pad(x, (0, MIN_SAMPLES - len(x)))
        f = self._smile.process_signal(x, self.sample_rate).to_numpy(dtype=np.float32)
        out = f.reshape(-1)
        if out.shape != (len(self.names),):
            raise RuntimeError(f"openSMILE gave {out.shape} features, expected ({len(self.names)},)")
        return np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)
