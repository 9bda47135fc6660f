"""The lines `ovdet train` itself prints: `ovdet train: ...`, from the main process only."""

from __future__ import annotations

import sys

from lightning.pytorch.utilities import rank_zero_only


@rank_zero_only
def say(message: str, err: bool = False) -> None:
    """One `ovdet train: MESSAGE` line; on stderr for warnings and errors (`err=True`), else stdout."""
    print(f"ovdet train: {message}", file=sys.stderr if err else sys.stdout, flush=True)
