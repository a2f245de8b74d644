"""Streaming runtime: clocks, ring buffers, sources, scheduler, sinks."""
