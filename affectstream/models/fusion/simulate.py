"""Token sequences for training: planned streams laid out tick by tick as the live stages do.

For each tick (10 Hz) of a planned stream, each modality's newest result is decided the way
the runtime produces it, then passed through the same `TokenHistory` the live fusion uses:

- face: a token per tick while a detectable face is in frame (captured up to one video frame
  earlier); when it leaves, the last result stays present, ageing, for the scheduler's
  `missing_ms` (1 s), as the face stage keeps its last crop;
- voice: a token per tick from about 0.3 s into an utterance until 0.3 s after it (the VAD's
  hold), the window ending at the tick; nothing in silence;
- text: the first half of an utterance's words, then all of them, each committed by the
  transcriber `delay` seconds after they were spoken (capture time: the last word's end); the
  words stay until `context_s` (8 s) after the last word, as the text stage keeps them.

Encoders err on data they never saw far more than on their own training data, which the bank
is made of; `substitute[m]` is the share of items whose outputs are swapped for those of an item
of another class, so the fusion learns from errors at the rate it will meet them.

A stream may be in a noisy room or before a poor webcam (`Conditions`, with a bank built
`degraded`): its utterances and faces are then read through those media (the bank's `noisy:`
and `poor:` items; a face the tracker loses there is absent), and in a noisy room the VAD
lets bursts of the noise alone through in silent segments (`noise:` items, no content). A
spoiled token whose own reading is wrong does not count as agreeing (the relevance target),
so the fusion learns to give a modality the room has spoiled less weight, while its own
reading still learns the content (the auxiliary target).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from affectstream.core.labels import MODALITIES
from affectstream.models.fusion import scenario as sc
from affectstream.models.fusion.bank import DEGRADED, HOP_S, NOISE_ITEMS, Bank, face_key
from affectstream.models.fusion.tokens import HistorySpec, TokenHistory

RATE_HZ = 10.0
FACE_HOLD_S = 1.0  # scheduler missing_ms for face
VOICE_ON_S, VOICE_OFF_S = 0.3, 0.3
TEXT_DELAY_S = (0.6, 1.8)
TEXT_CONTEXT_S = 8.0


FALSE_ALARM_P = 0.5  # a silent segment in a noisy room gets one burst of noise as voice
FALSE_ALARM_S = (0.5, 2.5)


@dataclass(frozen=True)
class Conditions:
    """Where one simulated stream is recorded: a noisy room, a poor webcam (either, both or
    neither); `readings[m]`, each bank row's own class (argmax), tells a spoiled token whose
    reading is wrong."""

    room: bool = False
    webcam: bool = False
    readings: dict | None = None

    @staticmethod
    def draw(share: float, rng: np.random.Generator, readings: dict) -> Conditions:
        """A noisy room with probability `share`, and apart a poor webcam with the same."""
        return Conditions(bool(rng.random() < share), bool(rng.random() < share), readings)


CLEAN = Conditions()


@dataclass
class Sequences:
    """Per tick: bank row indices (N, K_m) (-1 empty), ages (N, K_m) per modality; the target
    (N,); per modality whether its newest token agrees with the target (N, 3) and is present."""

    idx: dict[str, np.ndarray]
    age: dict[str, np.ndarray]
    target: np.ndarray
    agrees: np.ndarray
    present: np.ndarray
    content: np.ndarray  # (N, 3) class of each modality's newest content, -1 when absent

    @staticmethod
    def concat(parts: list[Sequences]) -> Sequences:
        return Sequences(
            {m: np.concatenate([p.idx[m] for p in parts]) for m in MODALITIES},
            {m: np.concatenate([p.age[m] for p in parts]) for m in MODALITIES},
            np.concatenate([p.target for p in parts]),
            np.concatenate([p.agrees for p in parts]),
            np.concatenate([p.present for p in parts]),
            np.concatenate([p.content for p in parts]),
        )

    def __len__(self) -> int:
        return len(self.target)

    @staticmethod
    def empty(n: int, spec: HistorySpec) -> Sequences:
        return Sequences(
            {m: np.full((n, spec.max_tokens[m]), -1, np.int64) for m in MODALITIES},
            {m: np.zeros((n, spec.max_tokens[m]), np.float32) for m in MODALITIES},
            np.zeros(n, np.int64),
            np.zeros((n, 3), bool),
            np.zeros((n, 3), bool),
            np.full((n, 3), -1, np.int64),
        )

    def put_history(self, k: int, hist: TokenHistory, now_ns: int) -> None:
        """Row k's slots: the history's tokens (bank rows) and their ages, newest last."""
        for m in MODALITIES:
            rows, ages, _mask = hist.view(m, now_ns)
            if rows:
                self.idx[m][k, hist.spec.max_tokens[m] - len(rows) :] = rows
                self.age[m][k] = ages


class _Swapper:
    """Which bank item stands for an item: itself, or (with probability q) one of another class."""

    def __init__(self, bank: Bank, m: str, q: float, rng: np.random.Generator) -> None:
        self.bank, self.m, self.q, self.rng = bank, m, q, rng
        by_class: dict[int, list[str]] = {}
        fixed = {f"text:{s}" for s in sc.RAVDESS_SENTENCES}  # real outputs, never swapped
        for key, c in bank.labels[m].items():  # a spoiled item stands in by its clean key
            if not key.startswith(("speech:", *DEGRADED)) and key not in fixed:
                by_class.setdefault(c, []).append(key)
        self.by_class = by_class
        self.memo: dict[str, str] = {}

    def __call__(self, key: str) -> str:
        if key not in self.memo:
            c = self.bank.labels[self.m].get(key)
            others = [k for k in self.by_class if k != c]
            if c is not None and others and self.rng.random() < self.q:
                o = others[int(self.rng.integers(len(others)))]
                self.memo[key] = self.by_class[o][int(self.rng.integers(len(self.by_class[o])))]
            else:
                self.memo[key] = key
        return self.memo[key]


def simulate(
    segments: list[sc.Segment],
    bank: Bank,
    spec: HistorySpec,
    substitute: dict[str, float],
    seed: int = 0,
    where: Conditions = CLEAN,
) -> Sequences:
    """The token sequence of one planned stream, one row per tick, recorded `where`."""
    rng = np.random.default_rng(seed)
    hard = np.random.default_rng([seed, 1])  # the clean stream's draws stay as they were
    alarms = _false_alarms(segments, hard) if where.room else []
    swap = {m: _Swapper(bank, m, substitute.get(m, 0.0), rng) for m in MODALITIES}
    total_s = segments[-1].end_s
    n = int(total_s * RATE_HZ)
    hist = TokenHistory(spec)
    out = Sequences.empty(n, spec)
    target, agrees, present, content = out.target, out.agrees, out.present, out.content

    # words: (emit s, capture s, bank row, content class), in emit order
    utterances = [u for s in segments for u in s.utterances]
    text_events = []
    for u in utterances:
        c = u.label if u.kind == "speech" else sc.NEUTRAL
        key = swap["text"](f"text:{u.text}") if u.kind == "speech" else f"text:{u.text}"
        r0, _ = bank.rows["text"][key]
        d1 = float(rng.uniform(*TEXT_DELAY_S))
        d2 = max(d1, float(rng.uniform(*TEXT_DELAY_S)))
        half = u.start_s + u.dur_s / 2
        text_events.append((half + d1, half, r0, c))
        text_events.append((u.start_s + u.dur_s + d2, u.start_s + u.dur_s, r0 + 1, c))
    text_events.sort()
    te = 0
    cur_text = None
    face_last: tuple[float, int, int] | None = None  # (capture s, row, class)
    last_cls: dict[str, int] = {}  # class of each modality's newest token
    seg_i, utt_i = 0, 0
    for k in range(n):
        t = k / RATE_HZ
        while seg_i + 1 < len(segments) and segments[seg_i].end_s <= t:
            seg_i += 1
        seg = segments[seg_i]
        target[k] = seg.target
        now: dict[str, tuple[int, int]] = {}
        cls: dict[str, int] = {}
        # face
        if seg.face["image"] is not None and rng.random() > 0.03:
            fkey = swap["face"](face_key(seg.face["image"]))
            if where.webcam:
                fkey = f"poor:{fkey}"  # in `bank.lost` when the tracker finds no face there
            if fkey in bank.rows["face"]:
                cap = t - float(rng.uniform(0, 1.0 / sc.FPS))
                face_last = (cap, bank.rows["face"][fkey][0], seg.face["label"])
        if face_last is not None and t - face_last[0] <= FACE_HOLD_S:
            now["face"] = (int(face_last[0] * 1e9), face_last[1])
            cls["face"] = face_last[2]
        # voice
        while (
            utt_i < len(utterances)
            and utterances[utt_i].start_s + utterances[utt_i].dur_s + VOICE_OFF_S < t
        ):
            utt_i += 1
        if utt_i < len(utterances):
            u = utterances[utt_i]
            tau = t - u.start_s
            if VOICE_ON_S <= tau <= u.dur_s + VOICE_OFF_S:
                vkey = f"{u.kind}:{u.key}"
                if u.kind == "ravdess":
                    vkey = swap["voice"](vkey)
                if where.room:
                    vkey = f"noisy:{vkey}"
                r0, r1 = bank.rows["voice"][vkey]
                j = min(r1 - 1, r0 + max(0, int(round(tau / HOP_S)) - 1))
                now["voice"] = (int(t * 1e9), j)
                cls["voice"] = u.label if u.kind == "ravdess" else sc.NEUTRAL
        if "voice" not in now:
            for a0, a1, key in alarms:  # the room's noise let through as speech
                if a0 <= t <= a1:
                    r0, r1 = bank.rows["voice"][key]
                    j = min(r1 - 1, r0 + int((t - a0) / HOP_S) + 10)
                    now["voice"] = (int(t * 1e9), j)
                    cls["voice"] = -1
        # text
        while te < len(text_events) and text_events[te][0] <= t:
            cur_text = text_events[te]
            te += 1
        if cur_text is not None and t - cur_text[1] <= TEXT_CONTEXT_S:
            now["text"] = (int(cur_text[1] * 1e9), cur_text[2])
            cls["text"] = cur_text[3]
        t_ns = int(t * 1e9)
        hist.update(now, t_ns)
        out.put_history(k, hist, t_ns)
        last_cls.update(cls)
        for j, m in enumerate(MODALITIES):
            present[k, j] = hist.visible(m)  # present, or held after it went absent
            if present[k, j] and last_cls.get(m, -1) >= 0:
                content[k, j] = last_cls[m]
                agrees[k, j] = last_cls[m] == seg.target and _readable(where, m, hist, last_cls[m])
    return out


def _readable(where: Conditions, m: str, hist: TokenHistory, content: int) -> bool:
    """False for a spoiled modality whose newest token reads another class than its content."""
    spoiled = (m == "voice" and where.room) or (m == "face" and where.webcam)
    if not spoiled or where.readings is None:
        return True
    newest = hist.newest(m)
    return newest is None or int(where.readings[m][newest[1]]) == content


def _false_alarms(segments: list[sc.Segment], rng: np.random.Generator) -> list:
    """(start s, end s, noise item key): one burst in a share of the silent segments."""
    out = []
    for seg in segments:
        if seg.utterances or rng.random() >= FALSE_ALARM_P:
            continue
        dur = float(rng.uniform(*FALSE_ALARM_S))
        a0 = float(rng.uniform(seg.start_s, max(seg.start_s, seg.end_s - dur)))
        out.append((a0, a0 + dur, f"noise:{int(rng.integers(NOISE_ITEMS))}"))
    return out


def from_replay(
    record: list, times_s: list[float], labels: dict, bank: Bank, spec: HistorySpec, name: str
) -> Sequences:
    """Token sequences of a live replay of a labelled stream (the learned fusion's record:
    per tick (emit_ns, {modality: (t_ns, token vector)}), with each tick's time in seconds).

    The live tokens carry what simulation misses (the transcript's errors and delays, voice
    windows that start in silence, the tracker's misses); their vectors are added to `bank`.
    A modality agrees when its segment's content agrees and its newest token was captured in
    that segment (a face held, or words left over, from the segment before do not).
    """
    segments = labels["segments"]
    seg_of = sc.segment_at(labels, times_s)
    n = len(record)
    hist = TokenHistory(spec)
    out = Sequences.empty(n, spec)
    target, agrees, present, content = out.target, out.agrees, out.present, out.content
    last: dict[str, tuple[int, int]] = {}
    start_ns = record[0][0] - int(times_s[0] * 1e9) if record else 0
    if len(times_s) != n:
        raise ValueError(f"{n} recorded ticks but {len(times_s)} tick times")
    for k, (emit_ns, tokens) in enumerate(record):
        seg = segments[seg_of[k]]
        target[k] = sc.LABELS.index(seg["target"])
        now = {}
        for m, (t_ns, vec) in tokens.items():
            if m not in last or last[m][0] != t_ns:
                row = bank.add_rows(m, f"replay:{name}:{m}:{k}", vec[None])
                last[m] = (t_ns, row)
            now[m] = last[m]
        hist.update(now, emit_ns)
        out.put_history(k, hist, emit_ns)
        for j, m in enumerate(MODALITIES):
            newest = hist.newest(m)  # present, or held after it went absent
            present[k, j] = newest is not None
            rel = seg[m]["relation"]
            if newest is not None and rel != "absent":
                captured_s = (newest[0] - start_ns) / 1e9
                fresh = captured_s >= seg["start_s"] - 0.05
                content[k, j] = sc.LABELS.index(seg[m]["label"]) if fresh else -1
                agrees[k, j] = rel == "agrees" and fresh
    return out
