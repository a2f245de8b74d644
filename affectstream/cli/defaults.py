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
