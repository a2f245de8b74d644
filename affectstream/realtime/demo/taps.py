"""Taps on the stream's stages: a modality switch for the demo's keys, and the newest result.

`StageTap(stage)` replaces `stage.run` on that one instance with a wrapper (the scheduler and
its stage worker call `stage.run` each tick, so nothing else changes, and no library class
grows demo-only state). While `enabled` is False the stage answers ABSENT without running:
the modality leaves the fusion, its relevance is 0 and its status "absent", exactly as when
its input says it is not there (given `forget`, the tap calls it with the modality when switched
off, so the fusion drops a voice it would otherwise hold for a moment). `newest` is the stage's
newest `ModalityResult` (the face
stage's carries the primary face's box in `info["box"]` and every face in `info["faces"]`); it is cleared when the stage reports the
modality absent, and for the face stage when it looked at a new frame and found no face.
"""

from __future__ import annotations

from collections.abc import Callable

from affectstream.realtime.stages.base import ABSENT, ModalityResult, Stage


class StageTap:
    def __init__(self, stage: Stage, forget: Callable[[str], None] | None = None) -> None:
        self.stage = stage
        self.forget = forget
        self._enabled = True
        self.newest: ModalityResult | None = None
        self._run = stage.run
        stage.run = self._tapped  # an instance attribute: this stage object only

    @property
    def enabled(self) -> bool:
        return self._enabled

    @enabled.setter
    def enabled(self, on: bool) -> None:
        self._enabled = bool(on)
        if not on and self.forget is not None:
            self.forget(self.stage.name)

    @property
    def name(self) -> str:
        return self.stage.name

    def _tapped(self, now_ns: int):
        if not self.enabled:
            self.newest = None
            return ABSENT
        seen = getattr(self.stage, "frames_seen", None)
        found = getattr(self.stage, "frames_with_face", None)
        out = self._run(now_ns)
        if isinstance(out, ModalityResult):
            self.newest = out
        elif out is ABSENT:
            self.newest = None
        elif seen is not None:
            new_frame = self.stage.frames_seen > seen
            no_face = self.stage.frames_with_face == found
            if new_frame and no_face:
                self.newest = None
        return out

    def box(self) -> tuple[int, int, int, int] | None:
        """The face box (x, y, w, h, frame pixels) of the newest result, if it has one."""
        r = self.newest
        return None if r is None else r.info.get("box")

    def faces(self) -> list[dict]:
        """Every face of the newest result ({id, box, probs, primary}), if it has them."""
        r = self.newest
        return [] if r is None else list(r.info.get("faces", ()))

    def remove(self) -> None:
        """Give the stage its own `run` back."""
        if self.stage.__dict__.get("run") == self._tapped:
            del self.stage.run


def tap_stages(
    stages: list[Stage], forget: Callable[[str], None] | None = None
) -> dict[str, StageTap]:
    """One tap per stage, by modality name (`forget`: `AffectStream.forget`)."""
    return {s.name: StageTap(s, forget) for s in stages}
