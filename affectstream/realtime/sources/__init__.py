"""Capture sources: each runs on its own thread (or device callback) and writes a ring buffer."""

from affectstream.realtime.sources.base import Source, SourceError, SourceState, SourceStatus

__all__ = ["Source", "SourceError", "SourceState", "SourceStatus"]
