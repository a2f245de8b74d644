"""The encoders' outputs on the training corpora, computed once: what fusion training reads.

Training sequences are made of real encoder outputs laid out on a simulated timeline
(`simulate.py`), so the encoders run once per face image, voice window and sentence, not per
tick. Each output is one row of `[embedding, probabilities]`, the token layout the live fusion
reads; `rows[key]` says where an item's rows are.

- faces: each image drawn in a frame as the streams do and cut by the live face tracker;
- voice: windows of `window_s` ending every 0.1 s through each utterance (silence before it),
  as the voice stage sees them tick by tick while someone speaks;
- text: each sentence's first half (the words committed first) and the whole sentence.

With `degraded=True` the bank also holds each face and utterance through harder media
(`degrade.py`), under its key with a prefix: `poor:` a face through a poor webcam (in
`lost` when the tracker then finds no face), `noisy:` an utterance in a noisy room; and
`noise:` items, a room's noise alone (what the VAD lets through in a silence). Simulated
streams in a noisy room or before a poor webcam read those instead (`simulate.py`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from affectstream.core.audio import MODEL_SAMPLE_RATE
from affectstream.models.fusion import scenario as sc
from affectstream.models.fusion.degrade import Room, Webcam

log = logging.getLogger(__name__)

HOP_S = 0.1  # one voice window per tick at 10 Hz
TAIL_S = 0.5  # windows continue this long after an utterance's end (VAD hangover)
DEGRADED = ("poor:", "noisy:", "noise:")  # key prefixes of the harder media's items
NOISE_ITEMS, NOISE_S = 24, 3.0  # rooms whose noise alone is encoded, and for how long


@dataclass
class Bank:
    """Rows of `[embedding, probs]` per modality, and per item the rows it owns."""

    feats: dict[str, list[np.ndarray]] = field(
        default_factory=lambda: {"face": [], "voice": [], "text": []}
    )
    rows: dict[str, dict[str, tuple[int, int]]] = field(
        default_factory=lambda: {"face": {}, "voice": {}, "text": {}}
    )
    labels: dict[str, dict[str, int]] = field(
        default_factory=lambda: {"face": {}, "voice": {}, "text": {}}
    )
    _n: dict[str, int] = field(default_factory=lambda: {"face": 0, "voice": 0, "text": 0})
    lost: set[str] = field(default_factory=set)  # `poor:` faces the tracker no longer finds

    def add(self, m: str, key: str, probs: np.ndarray, emb: np.ndarray, label: int) -> None:
        block = np.concatenate([emb, probs], axis=1).astype(np.float32)
        self.feats[m].append(block)
        self.rows[m][key] = (self._n[m], self._n[m] + len(block))
        self.labels[m][key] = label
        self._n[m] += len(block)

    def add_rows(self, m: str, key: str, rows: np.ndarray) -> int:
        """Token vectors `[embedding, probs]` as they are (a live replay's); the first row's index."""
        first = self._n[m]
        self.feats[m].append(np.asarray(rows, np.float32))
        self.rows[m][key] = (first, first + len(rows))
        self._n[m] += len(rows)
        return first

    def array(self, m: str) -> np.ndarray:
        """All rows of modality m, plus one zero row at the end for empty slots (index -1)."""
        dim = self.feats[m][0].shape[1]
        return np.concatenate(self.feats[m] + [np.zeros((1, dim), np.float32)])


def face_key(i: int) -> str:
    return f"face:{i}"


def voice_windows(x: np.ndarray, window_s: float, spoil=None) -> np.ndarray:
    """(K, window) windows ending at 0.1 s, 0.2 s, ... into `x` (silence before it);
    `spoil(signal) -> signal`, when given, spoils the silence and `x` alike (a room's noise)."""
    win = int(window_s * MODEL_SAMPLE_RATE)
    hop = int(HOP_S * MODEL_SAMPLE_RATE)
    padded = np.concatenate(
        [np.zeros(win, np.float32), x, np.zeros(int(TAIL_S * MODEL_SAMPLE_RATE), np.float32)]
    )
    if spoil is not None:
        padded = spoil(padded)
    ends = np.arange(win + hop, len(padded) + 1, hop)
    return np.stack([padded[e - win : e] for e in ends])


def build(
    pools: sc.Pools,
    speaker: sc.Speaker,
    predictors: dict,
    faces_per_class: int = 600,
    sentences_per_class: int = 150,
    seed: int = 0,
    progress=lambda *a: None,
    degraded: bool = False,
) -> tuple[Bank, sc.Pools]:
    """Encode a seeded subset of `pools` with the runtime predictors (face, voice, text).

    Returns the bank and the pools narrowed to what it holds (detectable faces, the encoded
    sentences), from which training streams are planned. `degraded`: also every face and
    utterance through harder media, each with its own draw of a room or a webcam, and
    `NOISE_ITEMS` rooms' noise alone (module docstring).
    """
    rng = np.random.default_rng(seed)
    hard = np.random.default_rng([seed, 1]) if degraded else None  # the clean draws stay
    bank = Bank()
    face_p, voice_p, text_p = predictors["face"], predictors["voice"], predictors["text"]
    faces: dict[int, list[int]] = {}
    for c, idx in pools.faces.items():
        faces[c] = []
        for i in rng.permutation(idx)[:faces_per_class]:
            crop = sc.live_crop(pools.face_images[i])
            if crop is None:
                continue
            probs, emb = face_p.predict(crop.image[None])
            bank.add("face", face_key(int(i)), probs, emb, c)
            faces[c].append(int(i))
            if hard is not None:
                _poor_face(bank, face_p, int(i), pools.face_images[i], c, hard)
        progress("faces", c)
    sentences: dict[int, list[str]] = {}
    window_s = getattr(voice_p, "window_s", 2.0)
    for c, pool in pools.sentences.items():
        chosen = [pool[j] for j in rng.permutation(len(pool))[:sentences_per_class]]
        sentences[c] = chosen
        for s in chosen:
            _voice(bank, voice_p, f"speech:{s}", speaker.audio(s), window_s, sc.NEUTRAL, hard)
        _text(bank, text_p, chosen, c)
        progress("sentences", c)
    for c, clips in pools.clips.items():
        for path, _dur, _actor in clips:
            _voice(bank, voice_p, f"ravdess:{path}", sc.ravdess_audio(path), window_s, c, hard)
        progress("clips", c)
    _text(bank, text_p, list(sc.RAVDESS_SENTENCES), sc.NEUTRAL)
    if hard is not None:
        silence = np.zeros(int(NOISE_S * MODEL_SAMPLE_RATE), np.float32)
        for k in range(NOISE_ITEMS):
            room = Room.draw(hard)
            windows = voice_windows(silence, window_s, lambda x, r=room: r.apply(x, hard))
            probs, emb = voice_p.predict(windows)
            bank.add("voice", f"noise:{k}", probs, emb, -1)
    narrowed = sc.Pools(pools.face_images, faces, pools.clips, sentences, pools.speech_s)
    narrowed._seen = {i: True for v in faces.values() for i in v}
    return bank, narrowed


def _voice(
    bank: Bank, predictor, key: str, x: np.ndarray, window_s: float, label: int, hard=None
) -> None:
    """An utterance's windows; with `hard` (a generator) also in a room of its drawing."""
    probs, emb = predictor.predict(voice_windows(x, window_s))
    bank.add("voice", key, probs, emb, label)
    if hard is not None:
        room = Room.draw(hard)
        probs, emb = predictor.predict(voice_windows(x, window_s, lambda y: room.apply(y, hard)))
        bank.add("voice", f"noisy:{key}", probs, emb, label)


def _poor_face(bank: Bank, predictor, i: int, image48, label: int, hard) -> None:
    """Face `i` through a webcam of `hard`'s drawing, cut by the live tracker (or lost)."""
    webcam = Webcam.draw(hard)
    crop = sc.live_crop(image48, spoil=lambda f: webcam.apply(f, hard))
    key = f"poor:{face_key(i)}"
    if crop is None:
        bank.lost.add(key)
        return
    probs, emb = predictor.predict(crop.image[None])
    bank.add("face", key, probs, emb, label)


def _text(bank: Bank, predictor, sentences: list[str], label: int) -> None:
    halves = [" ".join(s.split()[: max(1, len(s.split()) // 2)]) for s in sentences]
    for batch in range(0, len(sentences), 32):
        chunk = sentences[batch : batch + 32]
        half = halves[batch : batch + 32]
        p_full, e_full = predictor.predict(chunk, [""] * len(chunk))
        p_half, e_half = predictor.predict(half, [""] * len(half))
        for j, s in enumerate(chunk):
            probs = np.stack([p_half[j], p_full[j]])
            emb = np.stack([e_half[j], e_full[j]])
            bank.add("text", f"text:{s}", probs, emb, label)
