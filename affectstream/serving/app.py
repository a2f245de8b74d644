"""The Ray Serve application of `affectstream serve --ray [ADDRESS]`: building it from the
config and the server's flags, deploying it on a cluster (or on a local one it starts), and
closing its sessions with 1012 before it goes.

The application (docs/serving.md):

- `SessionHost` x `serving.hosts`: the WebSocket ingress; each connection's session lives in
  the replica holding its socket. The models not placed remote run inside each host.
- one `ModelServer` per encoder in `serving.remote` (`serving.replicas` each), batched with
  `@serve.batch`; `WhisperServer` when "stt" is remote.
- `Registry`: the sessions of all hosts (`--max-sessions`, 1013), drain and redeploy orders.

Addresses: a local cluster's head is started on 127.0.0.2 (Ray replaces 127.0.0.1 with the
machine's network address, and nothing of ours should travel there); usage stats are off.
"""

from __future__ import annotations

import copy
import logging
import os
import time
from dataclasses import dataclass

from affectstream.core.config import Config
from affectstream.realtime.io.protocol import Limits
from affectstream.serving.remote import APP, deployment_name

LOCAL_HEAD = "127.0.0.2"
log = logging.getLogger(__name__)


@dataclass
class ServerOptions:
    """The flags of `affectstream serve` that the session hosts need."""

    host: str = "127.0.0.1"
    port: int = 8765
    token: str | None = None
    limits: Limits = Limits()  # noqa: RUF009 - frozen, shared safely
    queue_size: int = 32
    status_every_s: float = 5.0
    video: bool = True
    audio: bool = True
    transcribe: bool = True


def used_models(config: Config, options: ServerOptions) -> list[str]:
    """The models a session can run with these inputs (the others need no deployment)."""
    text = options.audio and options.transcribe and config.transcriber.enabled
    on = {
        "face": options.video and config.face.enabled,
        "voice": options.audio and config.voice.enabled,
        "text": text and config.text.enabled,
        "stt": text,
        "fusion": config.fusion.method == "learned",
    }
    return [m for m, yes in on.items() if yes]


def build(config: Config, options: ServerOptions, generation: int | None = None):
    """The application: session hosts, the remote models they use, and the registry."""
    from affectstream.serving.hosts import Registry, SessionHost
    from affectstream.serving.models import ModelServer, WhisperServer

    s = config.serving
    config = copy.deepcopy(config)
    config.serving.remote = [m for m in s.remote if m in used_models(config, options)]
    resources = {"num_cpus": s.model_cpus, "num_gpus": s.model_gpus}
    models = {}
    for name in config.serving.remote:
        common = {"name": deployment_name(name), "num_replicas": s.replicas}
        if name == "stt":
            # whisper on the CPUs of model nodes, or on a GPU where `model_gpus` asks for one
            models[name] = WhisperServer.options(
                **common, max_ongoing_requests=64, ray_actor_options=resources
            ).bind(config)
        else:  # more requests at once than a batch holds, or @serve.batch never fills one
            models[name] = ModelServer.options(
                **common, max_ongoing_requests=4 * s.max_batch, ray_actor_options=resources
            ).bind(name, config)
    host_options = {
        "token": options.token,
        "limits": options.limits,
        "queue_size": options.queue_size,
        "status_every_s": options.status_every_s,
        "video": options.video,
        "audio": options.audio,
        "transcribe": options.transcribe,
        "generation": time.time_ns() if generation is None else generation,
    }
    placement = {"max_replicas_per_node": s.hosts_per_node} if s.hosts_per_node else {}
    # each socket is one ongoing request for its whole life: room for every session of the
    # application, plus the handshakes we refuse ourselves (Ray would hold them instead)
    hosts = SessionHost.options(
        num_replicas=s.hosts,
        max_ongoing_requests=options.limits.max_sessions + 16,
        ray_actor_options={"num_cpus": s.host_cpus},
        graceful_shutdown_timeout_s=5,
        **placement,
    )
    return hosts.bind(config, host_options, Registry.bind(), models)


def connect(address: str | None) -> bool:
    """Join the cluster at `address`, or start a local one on 127.0.0.2 (True: started)."""
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # sessions spread over the hosts by their load, not onto the proxy's own node first
    os.environ.setdefault("RAY_SERVE_PROXY_PREFER_LOCAL_NODE_ROUTING", "0")
    if address:
        ray.init(address=address, log_to_driver=False)
        return False
    ray.init(_node_ip_address=LOCAL_HEAD, include_dashboard=False, log_to_driver=False)
    return True


def serve_running() -> bool:
    """Whether Ray Serve already runs on the connected cluster."""
    import ray

    try:
        ray.get_actor("SERVE_CONTROLLER_ACTOR", namespace="serve")
    except ValueError:
        return False
    return True


def deploy(config: Config, options: ServerOptions) -> None:
    """Start Serve's proxy on `options.host:port` and run (or redeploy) the application;
    returns once every replica is up. A redeploy is announced to the running application's
    registry first, so its sessions close with 1012 before Serve stops their hosts. Serve
    already running elsewhere on the cluster keeps its own proxy address: another one is a
    ValueError."""
    from ray import serve

    serve.start(
        proxy_location=config.serving.proxy,
        http_options={"host": options.host, "port": options.port},
    )
    http = serve.context._get_global_client().http_config
    if (http.host, http.port) != (options.host, options.port):
        raise ValueError(
            f"Ray Serve already runs on this cluster with its proxy on {http.host}:{http.port}:"
            f" give --host {http.host} --port {http.port}, or stop it (serve shutdown)"
        )
    generation = time.time_ns()
    if APP in serve.status().applications:  # a redeploy: the old hosts close with 1012 first
        try:
            registry = serve.get_deployment_handle("Registry", APP)
            registry.announce.remote(generation).result(timeout_s=30)
        except Exception as e:  # the deploy goes on; the old hosts' clients may see 1006
            log.warning("could not tell the running application of the redeploy: %s", e)
    serve.run(build(config, options, generation), name=APP, route_prefix="/")


def shut_down(timeout_s: float = 5.0) -> None:
    """Close every session with 1012 (clients reconnect), then delete the application."""
    from ray import serve

    registry = serve.get_deployment_handle("Registry", APP)
    end = time.monotonic() + timeout_s
    try:
        while registry.drain.remote().result(timeout_s=timeout_s) and time.monotonic() < end:
            time.sleep(0.2)
    except Exception as e:  # the registry or the cluster is gone: nothing left to close
        log.warning("could not close the sessions with 1012: %s", e)
    serve.delete(APP)


__all__ = [
    "LOCAL_HEAD",
    "ServerOptions",
    "build",
    "connect",
    "deploy",
    "serve_running",
    "shut_down",
]
