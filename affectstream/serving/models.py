"""The shared model deployments: one per model placed remote (config `serving.remote`).

`ModelServer` holds one encoder's backend (face, voice, text or fusion), opened as a local
stream would open it, and answers `infer(feed)` for every session host and agent of the
cluster. Requests are collected with `@serve.batch`: those that arrive within
`serving.batch_wait_ms` become one backend call (`export.batching.merge_feeds` /
`split_outputs`, as the in-process batcher does), grouped by shape where they cannot share a
call. Ray only fills a batch when a replica takes more requests at once than the batch holds,
so `max_ongoing_requests` is set above `max_batch`.

`WhisperServer` holds the whisper decoder (CTranslate2, in a child process of the replica:
`models/stt/worker.py`) behind a `models.stt.shared.SharedDecoder`: the spans of different
sessions that arrive while it is busy go together in its next call (each keeps its own
prefix and prompt); replicas on their own CPUs or a GPU take that work off the session hosts.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import socket
from typing import Any

import numpy as np
from ray import serve

from affectstream.core.config import Config
from affectstream.export.batching import BatchStats, merge_feeds, shape_key, split_outputs

log = logging.getLogger(__name__)


def open_backend(name: str, config: Config):
    """The backend a local stream would run model `name` on (without the in-process batcher:
    here `@serve.batch` batches)."""
    from affectstream.export.predictors import open_predictor
    from affectstream.export.registry import get

    cfg = copy.deepcopy(config)
    cfg.batch.enabled = False
    return open_predictor(name, cfg).backend, tuple(a for a in get(name).paddable if a != "batch")


def where() -> dict[str, str]:
    """This replica's node (its Ray node id and address) and process, for stats and tests."""
    import os

    import ray

    ctx = ray.get_runtime_context()
    return {
        "node_id": ctx.get_node_id(),
        "node_ip": ray.util.get_node_ip_address(),
        "host": socket.gethostname(),
        "pid": str(os.getpid()),
    }


@serve.deployment
class ModelServer:
    """One encoder, batched across every caller of the cluster (see the module docstring)."""

    def __init__(self, name: str, config: Config) -> None:
        self.name = name
        self.backend, self.padded = open_backend(name, config)
        self.stats = BatchStats()
        opts = config.serving
        self.infer_batch.set_max_batch_size(opts.max_batch)
        self.infer_batch.set_batch_wait_timeout_s(opts.batch_wait_ms / 1000)
        log.info("%s model deployment on %s", name, self.backend.name)

    def signature(self):
        return self.backend.signature

    def describe(self) -> dict[str, Any]:
        return {
            **self.backend.describe(),
            "model": self.name,
            "where": where(),
            "batches": self.stats.summary(),
        }

    def reset_stats(self) -> None:
        self.stats.clear()

    async def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.signature().check(feed)  # a bad feed fails alone, with the backend's message
        return await self.infer_batch(feed)

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.005)
    async def infer_batch(self, feeds: list[dict]) -> list[dict]:
        return await asyncio.to_thread(self._run, feeds)

    def _run(self, feeds: list[dict]) -> list[dict]:
        groups: dict[tuple, list[int]] = {}
        for i, f in enumerate(feeds):
            groups.setdefault(shape_key(f, self.padded, self.backend.signature), []).append(i)
        out: list[Any] = [None] * len(feeds)
        for rows in groups.values():
            part = [feeds[i] for i in rows]
            if len(part) == 1:
                results = [self.backend.infer(part[0])]
            else:
                merged, own = merge_feeds(part, self.backend.signature, self.padded)
                results = split_outputs(self.backend.infer(merged), own, self.backend.signature)
            self.stats.add(len(part), [0.0] * len(part))
            for i, r in zip(rows, results, strict=True):
                out[i] = r
        return out

    def __del__(self) -> None:
        self.backend.close()


@serve.deployment
class WhisperServer:
    """The whisper decoder of the config's `transcriber` section. It is a
    `models.stt.shared.SharedDecoder`: the spans that the session hosts send while it is
    busy are decoded together in its next call."""

    def __init__(self, config: Config) -> None:
        from affectstream.realtime.transcriber import load_decoder

        self.decoder = load_decoder(config.transcriber)
        self.calls = 0

    def describe(self) -> dict[str, Any]:
        return {
            "model": "stt",
            "where": where(),
            "calls": self.calls,
            "batches": self.decoder.stats.summary(),
        }

    async def decode(self, audio, prompt="", prefix=(), prefix_end=0.0, final=True):
        self.calls += 1
        return await asyncio.to_thread(
            self.decoder.decode, audio, prompt, prefix, prefix_end, final
        )
