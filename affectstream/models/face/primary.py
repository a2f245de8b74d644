"""Which of the faces in view the fused estimate follows: the primary face.

Why: several people may be in view, but the fusion model reads one face beside one voice and
one transcript. By default the primary is the largest face (the one nearest the camera, who
is most likely the one speaking to it); a host that knows better (the active speaker, the
user who logged in) names it. Switching on every frame where two faces are about the same
size would make the estimate flicker between two people, so another face takes over only
after it has stayed clearly larger (`MARGIN` x the area) for `switch_s` seconds, or at once
when the primary leaves the view.
"""

from __future__ import annotations

import threading


class PrimaryFace:
    """`choose([(id, area)], t_ns) -> id | None`, once per frame, in frame order.

    Attributes:
        switch_s: how long another face must stay larger before it becomes primary.
        current: the primary face's id (None before any face).
        switches: how often the primary changed from one face to another.
    """

    MARGIN = 1.2  # "clearly larger": 20 % more area

    def __init__(self, switch_s: float = 1.0) -> None:
        if switch_s < 0:
            raise ValueError("face.primary_switch_s must be >= 0")
        self.switch_s = float(switch_s)
        self.current: int | None = None
        self.switches = 0
        self._pinned: int | None = None
        self._challenger: tuple[int, int] | None = None  # (id, since t_ns)
        self._lock = threading.Lock()

    def pin(self, face_id: int | None) -> None:
        """The host's choice: `face_id` is primary while it is in view (None: the largest
        again). Safe from any thread; applied at the next frame."""
        with self._lock:
            self._pinned = None if face_id is None else int(face_id)

    @property
    def pinned(self) -> int | None:
        return self._pinned

    def choose(self, faces: list[tuple[int, float]], t_ns: int) -> int | None:
        """The primary among `faces` ([(id, area)]) at frame time `t_ns`."""
        if not faces:
            return self.current  # no face now: keep it, it may be back at once
        area = dict(faces)
        with self._lock:
            pinned = self._pinned
        if pinned is not None and pinned in area:
            return self._set(pinned)
        largest = max(faces, key=lambda f: f[1])[0]
        if self.current not in area:
            return self._set(largest)
        if largest != self.current and area[largest] > self.MARGIN * area[self.current]:
            if self._challenger is None or self._challenger[0] != largest:
                self._challenger = (largest, t_ns)
            elif t_ns - self._challenger[1] >= self.switch_s * 1e9:
                return self._set(largest)
        else:
            self._challenger = None
        return self.current

    def _set(self, face_id: int) -> int:
        if self.current is not None and face_id != self.current:
            self.switches += 1
        self.current = face_id
        self._challenger = None
        return face_id
