"""Defaults the CLI supplies for data and media paths: the checkout's `../shared` folder.

Library code (bench, models, realtime) takes every path as an argument; only the commands
fill in these defaults, resolved when the command runs (an installed package has no
`../shared`, so there the paths must be given).
"""

from __future__ import annotations

from pathlib import Path


def shared_dir() -> Path:
    """`<repo>/../shared`, the folder beside the checkout that holds the test media and data."""
    return Path(__file__).resolve().parents[2].parent / "shared"


def fill_shared_defaults(args, defaults: dict[str, tuple[str, str]]) -> None:
    """Give each flag in `defaults` (dest -> (the flag as typed, e.g. "--faces NPZ"; its path
    under ../shared)) that the command line left unset its path in the checkout's ../shared.

    An installed package has no ../shared: there a UsageError says in one line which flags to
    give, instead of a "file not found" about a path the user never typed (or a traceback).
    """
    from affectstream.core.errors import UsageError

    missing = []
    for dest, (flag, rel) in defaults.items():
        if getattr(args, dest) is not None:
            continue
        path = shared_dir() / rel
        if path.exists():
            setattr(args, dest, str(path))
        else:
            missing.append(flag)
    if missing:
        what = "its default" if len(missing) == 1 else "their defaults"
        raise UsageError(
            f"give {', '.join(missing)}: {what} in the checkout's ../shared "
            f"({shared_dir()}) {'is' if len(missing) == 1 else 'are'} not there"
        )
