"""Refuse `make install` up front when the disk cannot hold the new venv.

pip otherwise fails minutes in with "[Errno 28] No space left on device" and a half-built venv.
Standard library only: it runs with the system Python before the venv exists.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path


def existing_parent(path: Path) -> Path:
    """The folder whose file system the venv will land on (the venv itself may not exist yet)."""
    path = path.absolute()
    while not path.exists():
        path = path.parent
    return path


def has_torch(venv: Path) -> bool:
    """torch and its CUDA libraries are most of the size: once they are in, the rest is small."""
    return any(venv.glob("lib/python*/site-packages/torch/__init__.py"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("venv", type=Path, help="the venv folder make install fills")
    parser.add_argument("--need-gb", type=float, default=7.0, help="free space a new venv needs (default 7)")
    args = parser.parse_args(argv)
    if has_torch(args.venv):
        return 0
    where = existing_parent(args.venv)
    free_gb = shutil.disk_usage(where).free / 2**30
    if free_gb >= args.need_gb:
        return 0
    print(f"make install: the venv needs about {args.need_gb:g} GB free, but {where} has {free_gb:.1f} GB; "
          f"free some space or put the venv on a larger disk with `make VENV=/path/to/venv ...`", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
