"""Serve live estimates over a websocket; clients may push video frames and audio."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)"
    )
    p.add_argument("--port", type=int, default=8765, help="port (default 8765; 0 picks a free one)")
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
    from affectstream.cli.args import add_input_arguments

    add_input_arguments(p)
    p.epilog = "With no input flag the server is in push mode: clients send frames and audio."


def run(args: argparse.Namespace) -> int:
    import asyncio
    import signal

    from affectstream.cli.args import build_stream
    from affectstream.core.errors import UsageError
    from affectstream.realtime.io.websocket import StreamServer

    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port must be 0..65535, got {args.port}")
    if args.queue < 1:
        raise UsageError(f"--queue must be at least 1, got {args.queue}")
    if args.status_every <= 0:
        raise UsageError(f"--status-every must be positive, got {args.status_every}")
    stream = build_stream(args, push=True)
    server = StreamServer(
        stream,
        host=args.host,
        port=args.port,
        queue_size=args.queue,
        status_every_s=args.status_every,
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
        stream.close()
    return 0
