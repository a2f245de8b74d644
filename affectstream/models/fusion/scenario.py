"""Labelled multimodal streams composed from real unimodal corpora.

No corpus here holds face, voice and words of one person together, so a stream is composed:
a sequence of segments (3-8 s), each with a target class, in which

- the face is an image of the target class (agrees), of another class (conflicts: the polite
  smile over an angry voice), or not there (no face in frame);
- the audio is emotional speech (RAVDESS: the voice carries the class, the words are one of two
  neutral sentences), a synthesised sentence (espeak-ng reading a MELD sentence: the words carry
  the class, the voice is flat), or silence.

The target is what the emotional content shows: the audio's emotional channel when there is
speech (an expression that disagrees with it is the conflicting one), the face in silence. So
at least one present modality always agrees; the flat channel of speech (neutral words under an
emotional voice, a flat voice reading emotional words) agrees only when the target is neutral.
`MIX` is the default mix; `plan_stream` draws segments from it, `write_stream` renders them as
ordinary media (`video.avi` + `audio.wav`) and `labels.json`, which `affectstream run --video
video.avi --audio audio.wav` replays and `affectstream eval stream` scores.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from affectstream.core.audio import MODEL_SAMPLE_RATE
from affectstream.core.labels import LABELS

VERSION = 1
NEUTRAL = LABELS.index("neutral")
RAVDESS_SENTENCES = ("Kids are talking by the door.", "Dogs are sitting by the door.")

# The default mix (the figures in models/cards/fusion.md are on streams drawn from it).
MIX = {
    "segment_s": (3.0, 8.0),
    "audio": {"ravdess": 0.40, "speech": 0.35, "silence": 0.25},
    # the face when there is speech; in silence the face always agrees (it is all there is)
    "face": {"agrees": 0.45, "conflicts": 0.35, "absent": 0.20},
    "gap_s": (0.3, 0.8),  # between two utterances of one segment
    "lead_s": (0.1, 0.4),  # from a segment's start to its first utterance
}

FRAME_SIZE = (320, 240)  # video width, height
FACE_PX = 160  # a 48x48 face is drawn at this size, centred
FPS = 15
BACKGROUND = 110


class ScenarioError(ValueError):
    """Input data that cannot make a stream; the message names the problem."""


@dataclass
class Utterance:
    """One piece of speech placed in a segment: a RAVDESS clip or a synthesised sentence."""

    kind: str  # "ravdess" or "speech"
    key: str  # clip path, or the sentence
    label: int  # the class its emotional channel carries
    start_s: float
    dur_s: float
    text: str  # what is said


@dataclass
class Segment:
    start_s: float
    end_s: float
    target: int
    audio: str  # ravdess | speech | silence
    face: dict  # {"relation": agrees|conflicts|absent, "label": int|None, "image": int|None}
    voice: dict  # {"relation": ..., "label": int|None}
    text: dict
    utterances: list[Utterance] = field(default_factory=list)

    def to_json(self) -> dict:
        d = asdict(self)
        d["target"] = LABELS[self.target]
        for m in ("face", "voice", "text"):
            d[m] = dict(d[m])
            if d[m].get("label") is not None:
                d[m]["label"] = LABELS[d[m]["label"]]
        for u in d["utterances"]:
            u["label"] = LABELS[u["label"]]
        return d


@dataclass
class Pools:
    """What streams are drawn from, by class: face images, RAVDESS clips, sentences.

    `faces[c]`: indices into `face_images`; `clips[c]`: (path, speech duration s, actor);
    `sentences[c]`: sentences. `speech_s(sentence)` gives a sentence's spoken length.
    """

    face_images: np.ndarray
    faces: dict[int, list[int]]
    clips: dict[int, list[tuple[str, float, int]]]
    sentences: dict[int, list[str]]
    speech_s: object  # Callable[[str], float]

    _seen: dict[int, bool] = field(default_factory=dict)

    def draw_face(self, label: int, rng: np.random.Generator, tries: int = 50) -> int:
        """A face of class `label` that the live face detector finds when drawn in a frame:
        the stream shows a face the pipeline can see, so "absent" means no face in frame."""
        options = self.faces[label]
        for _ in range(tries):
            i = int(options[int(rng.integers(len(options)))])
            if i not in self._seen:
                self._seen[i] = detectable(self.face_images[i])
            if self._seen[i]:
                return i
        raise ScenarioError(f"the face detector finds none of {tries} {LABELS[label]} faces drawn")

    def check(self) -> None:
        for name, pool in (
            ("faces", self.faces),
            ("clips", self.clips),
            ("sentences", self.sentences),
        ):
            empty = [LABELS[c] for c in range(len(LABELS)) if not pool.get(c)]
            if empty:
                raise ScenarioError(f"no {name} of class {', '.join(empty)} in the input data")


def _choice(rng: np.random.Generator, weights: dict[str, float]) -> str:
    keys = list(weights)
    p = np.array([weights[k] for k in keys], float)
    return keys[int(rng.choice(len(keys), p=p / p.sum()))]


def _flat(target: int) -> dict:
    """The flat channel of speech: neutral content, which agrees only with a neutral target."""
    if target == NEUTRAL:
        return {"relation": "agrees", "label": NEUTRAL}
    return {"relation": "conflicts", "label": NEUTRAL}


def plan_stream(
    pools: Pools, minutes: float, seed: int = 0, mix: dict | None = None
) -> list[Segment]:
    """Segments filling `minutes`, drawn from `mix` (default `MIX`) with `seed`."""
    pools.check()
    mix = mix or MIX
    rng = np.random.default_rng(seed)
    segments: list[Segment] = []
    t = 0.0
    while t < minutes * 60.0:
        target = int(rng.integers(len(LABELS)))
        length = float(rng.uniform(*mix["segment_s"]))
        audio = _choice(rng, mix["audio"])
        utterances: list[Utterance] = []
        if audio != "silence":
            u_t = t + float(rng.uniform(*mix["lead_s"]))
            actor = None
            while True:
                if audio == "ravdess":
                    options = pools.clips[target]
                    same = [c for c in options if c[2] == actor] if actor is not None else []
                    path, dur, actor = (same or options)[int(rng.integers(len(same or options)))]
                    text = RAVDESS_SENTENCES[statement(path) - 1]
                    u = Utterance("ravdess", path, target, u_t, dur, text)
                else:
                    sentence = pools.sentences[target][
                        int(rng.integers(len(pools.sentences[target])))
                    ]
                    u = Utterance(
                        "speech", sentence, target, u_t, pools.speech_s(sentence), sentence
                    )
                if utterances and u.start_s + u.dur_s > t + length:
                    break
                utterances.append(u)
                u_t = u.start_s + u.dur_s + float(rng.uniform(*mix["gap_s"]))
            length = max(length, utterances[-1].start_s + utterances[-1].dur_s + 0.3 - t)
        face_rel = "agrees" if audio == "silence" else _choice(rng, mix["face"])
        face_label = None
        if face_rel == "agrees":
            face_label = target
        elif face_rel == "conflicts":
            face_label = int(rng.choice([c for c in range(len(LABELS)) if c != target]))
        image = None
        if face_label is not None:
            image = pools.draw_face(face_label, rng)
        face = {"relation": face_rel, "label": face_label, "image": image}
        if audio == "silence":
            voice = text = {"relation": "absent", "label": None}
        elif audio == "ravdess":
            voice, text = {"relation": "agrees", "label": target}, _flat(target)
        else:
            voice, text = _flat(target), {"relation": "agrees", "label": target}
        segments.append(
            Segment(t, t + length, target, audio, face, dict(voice), dict(text), utterances)
        )
        t += length
    return segments


def mix_stats(segments: list[Segment]) -> dict:
    """Shares of segments with conflicting content, with an absent modality, per audio kind."""
    n = len(segments)
    rel = [[s.face["relation"], s.voice["relation"], s.text["relation"]] for s in segments]
    return {
        "segments": n,
        "seconds": round(segments[-1].end_s if segments else 0.0, 2),
        "conflicting": round(sum("conflicts" in r for r in rel) / n, 3),
        "absent": round(sum("absent" in r for r in rel) / n, 3),
        "audio": {k: round(sum(s.audio == k for s in segments) / n, 3) for k in MIX["audio"]},
        "face": {
            k: round(sum(s.face["relation"] == k for s in segments) / n, 3) for k in MIX["face"]
        },
    }


# -- the corpora ----------------------------------------------------------------------------
def face_pool(npz: str | Path) -> tuple[np.ndarray, dict[int, list[int]]]:
    """FER2013-format faces (`images`, labels in the common order), by class."""
    from affectstream.models.face.data import load_fer

    data = load_fer(npz)
    return data.images, {c: np.flatnonzero(data.labels == c).tolist() for c in range(len(LABELS))}


def clip_pool(
    ravdess: str | Path, actors: tuple[int, ...]
) -> dict[int, list[tuple[str, float, int]]]:
    """RAVDESS clips of `actors` by class, with their speech span's length."""
    from affectstream.models.voice.data import load_audio, scan, speech_span

    clips = [c for c in scan(ravdess) if c.actor in actors]
    if not clips:
        raise ScenarioError(f"{ravdess}: no RAVDESS clips of actors {', '.join(map(str, actors))}")
    out: dict[int, list] = {c: [] for c in range(len(LABELS))}
    for c in clips:
        x = load_audio(c.path)
        a, b = speech_span(x)
        out[c.label_index].append((str(c.path), (b - a) / MODEL_SAMPLE_RATE, c.actor))
    return out


def sentence_pool(csv_path: str | Path, max_words: int = 14) -> dict[int, list[str]]:
    """Sentences of a MELD-format CSV by class (3 to `max_words` words: a few seconds spoken)."""
    from affectstream.models.text.data import read_meld

    out: dict[int, list[str]] = {c: [] for c in range(len(LABELS))}
    for ex in read_meld(csv_path, context_turns=0):
        words = ex.text.split()
        if 3 <= len(words) <= max_words and ex.text.isascii():
            out[ex.label].append(ex.text)
    return out


class Speaker:
    """Sentences spoken by Debian's espeak-ng (flat prosody), memoised, at 16 kHz float32."""

    VOICES = ("en-us", "en-gb", "en-us+f3", "en-gb+m3")

    def __init__(self, seed: int = 0) -> None:
        self.exe = shutil.which("espeak-ng")
        if self.exe is None:
            raise ScenarioError("espeak-ng is not installed (Debian: apt-get install espeak-ng)")
        self.seed = seed
        self._cache: dict[str, np.ndarray] = {}

    def audio(self, sentence: str) -> np.ndarray:
        if sentence not in self._cache:
            import soundfile as sf
            import soxr

            h = sum(map(ord, sentence)) + self.seed
            voice = self.VOICES[h % len(self.VOICES)]
            wav = subprocess.run(
                [self.exe, "-v", voice, "-s", str(150 + h % 30), "--stdout", sentence],
                capture_output=True,
                check=True,
            ).stdout
            x, sr = sf.read(io.BytesIO(wav), dtype="float32")
            x = soxr.resample(x, sr, MODEL_SAMPLE_RATE).astype(np.float32)
            a, b = _trim(x)
            self._cache[sentence] = _level(x[a:b])
        return self._cache[sentence]

    def seconds(self, sentence: str) -> float:
        return len(self.audio(sentence)) / MODEL_SAMPLE_RATE


def statement(path: str) -> int:
    """Which of RAVDESS's two sentences a clip says (1 or 2), from its file name."""
    from affectstream.models.voice.data import parse_name

    return parse_name(path).statement


def _trim(x: np.ndarray) -> tuple[int, int]:
    from affectstream.models.voice.data import speech_span

    return speech_span(x)


# RMS of speech in RAVDESS's neutral clips (median over training actors 1-16): the synthesised
# sentences are brought to this level. RAVDESS clips keep their own level, as the voice model
# was trained on them: bringing each to a peak of 0.5 cost 9 points of its accuracy on actors
# 17-20 (0.708 -> 0.617, one 2 s window per clip; its per-window normalisation removes gain,
# but not the log-mel floor's effect on quiet frames).
SPEECH_RMS = 0.0058


def _level(x: np.ndarray, rms: float = SPEECH_RMS) -> np.ndarray:
    r = float(np.sqrt(np.mean(x.astype(np.float64) ** 2))) if x.size else 0.0
    return (x * (rms / r)).astype(np.float32) if r > 0 else x


def ravdess_audio(path: str) -> np.ndarray:
    """A RAVDESS clip's speech span, at its own level."""
    from affectstream.models.voice.data import load_audio

    x = load_audio(path)
    a, b = _trim(x)
    return x[a:b]


def load_pools(
    faces: str | Path,
    ravdess: str | Path,
    text: str | Path,
    actors: tuple[int, ...],
    speaker: Speaker,
) -> Pools:
    images, by_class = face_pool(faces)
    pools = Pools(
        images, by_class, clip_pool(ravdess, actors), sentence_pool(text), speaker.seconds
    )
    pools.check()
    return pools


# -- media ----------------------------------------------------------------------------------
def live_crop(image48: np.ndarray, frames: int = 3, spoil=None):
    """The crop the live face tracker cuts from this face drawn in a frame (as `write_stream`
    draws it), the last of `frames` frames that gave one; None when it finds no face.
    `spoil(frame) -> frame`, when given, spoils each frame first (`degrade.Webcam.apply`)."""
    from affectstream.core.config import FaceConfig
    from affectstream.models.face.detect import FaceTracker

    tracker = FaceTracker(FaceConfig())
    frame = render_face(image48)
    shown = (frame if spoil is None else spoil(frame) for _ in range(frames))
    crops = [c for c in (tracker.process(f) for f in shown) if c is not None]
    return crops[-1] if crops else None


def detectable(image48: np.ndarray) -> bool:
    """Whether the live face tracker finds this face drawn in a frame."""
    return live_crop(image48) is not None


def render_face(image48: np.ndarray | None) -> np.ndarray:
    """One BGR video frame: the face drawn large on a plain background, or the background."""
    import cv2

    w, h = FRAME_SIZE
    frame = np.full((h, w), BACKGROUND, np.uint8)
    if image48 is not None:
        big = cv2.resize(image48, (FACE_PX, FACE_PX), interpolation=cv2.INTER_CUBIC)
        y0, x0 = (h - FACE_PX) // 2, (w - FACE_PX) // 2
        frame[y0 : y0 + FACE_PX, x0 : x0 + FACE_PX] = big
    return cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)


def write_stream(
    segments: list[Segment], pools: Pools, speaker: Speaker, out: str | Path, info: dict
) -> Path:
    """`out/video.avi` (MJPG, `FPS`), `out/audio.wav` (16 kHz mono) and `out/labels.json`."""
    import cv2
    import soundfile as sf

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    total_s = segments[-1].end_s
    audio = np.zeros(int(total_s * MODEL_SAMPLE_RATE) + MODEL_SAMPLE_RATE, np.float32)
    for seg in segments:
        for u in seg.utterances:
            x = ravdess_audio(u.key) if u.kind == "ravdess" else speaker.audio(u.key)
            a = int(u.start_s * MODEL_SAMPLE_RATE)
            audio[a : a + len(x)] += x[: len(audio) - a]
    try:
        sf.write(str(out / "audio.wav"), audio, MODEL_SAMPLE_RATE, subtype="PCM_16")
        writer = cv2.VideoWriter(
            str(out / "video.avi"), cv2.VideoWriter_fourcc(*"MJPG"), FPS, FRAME_SIZE
        )
        if not writer.isOpened():
            raise ScenarioError(f"cannot write {out / 'video.avi'} (OpenCV has no MJPG writer?)")
        k, frames = 0, int(np.ceil(total_s * FPS))
        for seg in segments:
            img = None if seg.face["image"] is None else pools.face_images[seg.face["image"]]
            frame = render_face(img)
            while k < frames and k / FPS < seg.end_s:
                writer.write(frame)
                k += 1
        writer.release()
    except OSError as e:
        raise ScenarioError(f"cannot write the stream to {out}: {e.strerror or e}") from None
    labels = {
        "version": VERSION,
        "video": "video.avi",
        "audio": "audio.wav",
        "fps": FPS,
        "sample_rate": MODEL_SAMPLE_RATE,
        "labels": list(LABELS),
        "mix": MIX,
        "stats": mix_stats(segments),
        "source": info,
        "segments": [s.to_json() for s in segments],
    }
    (out / "labels.json").write_text(json.dumps(labels, indent=1))
    return out


def segment_at(labels: dict, times_s) -> np.ndarray:
    """Index of the segment of `labels` each time (s from the stream's start) falls in; times
    past the end count in the last segment."""
    starts = np.array([seg["start_s"] for seg in labels["segments"]])
    i = np.searchsorted(starts, np.asarray(times_s, float), side="right") - 1
    return np.clip(i, 0, len(starts) - 1)


def read_labels(folder: str | Path) -> dict:
    """A stream's `labels.json`, checked; segment labels as class indices."""
    path = Path(folder) / "labels.json"
    try:
        d = json.loads(path.read_text())
    except FileNotFoundError:
        raise ScenarioError(
            f"{folder}: no labels.json (make one with `affectstream scenario make`)"
        ) from None
    except (ValueError, UnicodeDecodeError) as e:
        raise ScenarioError(f"{path}: not valid JSON ({e})") from None
    if d.get("version") != VERSION or not isinstance(d.get("segments"), list) or not d["segments"]:
        raise ScenarioError(f"{path}: not a version-{VERSION} stream labels file with segments")
    for name in ("video", "audio"):
        if not (Path(folder) / d.get(name, "")).is_file():
            raise ScenarioError(f"{folder}: {d.get(name)!r} named in labels.json is missing")
    return d
