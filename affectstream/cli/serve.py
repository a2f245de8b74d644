"""Serve live estimates over a websocket: one session per connection in push mode (clients
send video frames and audio), or the server's own inputs streamed to every client."""

from __future__ import annotations

import argparse
import os

TOKEN_ENV = "AFFECTSTREAM_TOKEN"


# The Limits fields the command line sets, with their types and what they bound.
LIMIT_FLAGS = (
    ("max_sessions", int, "connections at once; the next is closed with 1013 server busy"),
    ("max_message_bytes", int, "largest binary message; one over twice this closes with 1009"),
    ("max_fps", float, "frames a session may push per second"),
    ("max_audio_rate", float, "audio seconds a session may push per second"),
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    from affectstream.realtime.io.protocol import Limits

    p.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)"
    )
    p.add_argument("--port", type=int, default=8765, help="port (default 8765; 0 picks a free one)")
    p.add_argument(
        "--token",
        metavar="T",
        help=f"clients must send 'Authorization: Bearer T' (default: ${TOKEN_ENV}); "
        "needed to bind beyond loopback",
    )
    p.add_argument(
        "--queue",
        type=int,
        default=32,
        metavar="N",
        help="estimates held per slow client before its oldest are dropped (default 32)",
    )
    p.add_argument(
        "--status-every",
        type=float,
        default=5.0,
        metavar="S",
        help="send each client a status message every S seconds (default 5)",
    )
    lim = p.add_argument_group("limits (past one, the message is refused with an error code)")
    for name, kind, what in LIMIT_FLAGS:
        default = getattr(Limits(), name)
        lim.add_argument(
            "--" + name.replace("_", "-"),
            type=kind,
            default=default,
            metavar="N",
            help=f"{what} (default {default})",
        )
    p.add_argument(
        "--ray",
        nargs="?",
        const="",
        metavar="ADDRESS",
        help="serve push mode as a Ray Serve application on the cluster at ADDRESS, or on a "
        "local one started on 127.0.0.2 (extra affectstream[ray]; config `serving`; "
        "docs/serving.md)",
    )
    from affectstream.cli.args import add_input_arguments

    add_input_arguments(p)
    p.epilog = (
        "With no input flag the server is in push mode: every connection is its own session "
        "and sends its own frames and audio. Protocol: docs/server.md."
    )


def run(args: argparse.Namespace) -> int:
    import asyncio
    import signal
    from dataclasses import replace

    from affectstream.cli.args import build_stream, config_from_args, has_input
    from affectstream.core.errors import UsageError
    from affectstream.realtime.io.protocol import Limits
    from affectstream.realtime.io.session import SessionFactory
    from affectstream.realtime.io.websocket import StreamServer, exposure_problem

    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port must be 0..65535, got {args.port}")
    if args.queue < 1:
        raise UsageError(f"--queue must be at least 1, got {args.queue}")
    if args.status_every <= 0:
        raise UsageError(f"--status-every must be positive, got {args.status_every}")
    token = args.token or os.environ.get(TOKEN_ENV) or None
    problem = exposure_problem(args.host, token)
    if problem:
        raise UsageError(f"--host {args.host}: {problem} (--token T, or ${TOKEN_ENV})")
    try:
        limits = replace(Limits(), **{name: getattr(args, name) for name, _, _ in LIMIT_FLAGS})
    except ValueError as e:
        raise UsageError(str(e).replace("limit ", "--").replace("_", "-")) from None
    if args.ray is not None:
        if has_input(args):
            raise UsageError("--ray serves push mode only: leave out the input flags")
        return run_on_ray(args, config_from_args(args), token, limits)
    stream = sessions = None
    if has_input(args):
        stream = build_stream(args)
    else:
        sessions = SessionFactory(
            config_from_args(args),
            video=not args.no_video,
            audio=not args.no_audio,
            transcribe=args.transcribe,
        )
        try:
            sessions.open()  # every model loads (or fails) before the server listens
        except ValueError as e:
            raise UsageError(str(e)) from None
    server = StreamServer(
        stream,
        sessions=sessions,
        host=args.host,
        port=args.port,
        queue_size=args.queue,
        status_every_s=args.status_every,
        token=token,
        limits=limits,
    )

    bound = []

    def ready(s: StreamServer) -> None:
        bound.append(s.port)
        print(f"affectstream serve: ws://{s.host}:{s.port} ({s.mode} mode)", flush=True)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, server.stop)
        await server.serve(ready)

    try:
        asyncio.run(main())
    except OSError as e:
        if bound:
            raise
        # the port is taken, or the host is not ours
        raise UsageError(f"cannot serve on {args.host}:{args.port}: {e.strerror or e}") from None
    finally:
        if stream is not None:
            stream.close()
    return 0


def run_on_ray(args: argparse.Namespace, config, token: str | None, limits) -> int:
    """`serve --ray`: deploy the application, print its address, and on Ctrl-C or SIGTERM
    close its sessions with 1012 and delete it (and stop the local cluster if we started it)."""
    import signal
    import threading

    from affectstream.core.errors import UsageError

    try:
        import ray
        from ray import serve

        from affectstream.serving import app
    except ImportError as e:
        raise UsageError(
            f"--ray needs Ray Serve: pip install 'affectstream[ray]' ({e.name} is missing)"
        ) from None
    if args.port == 0:
        raise UsageError("--ray needs a fixed --port (Ray Serve's proxy has no free-port choice)")
    options = app.ServerOptions(
        host=args.host,
        port=args.port,
        token=token,
        limits=limits,
        queue_size=args.queue,
        status_every_s=args.status_every,
        video=not args.no_video,
        audio=not args.no_audio,
        transcribe=args.transcribe,
    )
    started = app.connect(args.ray or None)
    serve_was_running = app.serve_running()
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):  # after ray.init, which sets its own
        signal.signal(sig, lambda *_: stop.set())
    try:
        try:
            app.deploy(config, options)
        except ValueError as e:
            raise UsageError(str(e)) from None
        where = args.ray or f"a local cluster on {app.LOCAL_HEAD}"
        print(
            f"affectstream serve: ws://{args.host}:{args.port} (push mode, Ray Serve on {where})",
            flush=True,
        )
        stop.wait()
        app.shut_down()
    finally:
        if started or not serve_was_running:  # Serve (and its proxy port) is ours to stop
            serve.shutdown()
        ray.shutdown()
    return 0
