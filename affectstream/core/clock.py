"""Monotonic time, never wall-clock: latency is measured on one clock from capture to emit."""

from __future__ import annotations

import time


def now_ns() -> int:
    """The stream clock: `time.monotonic_ns()`."""
    return time.monotonic_ns()


def ms(ns: int | float) -> float:
    return ns / 1e6
