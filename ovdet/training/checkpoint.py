"""Read a Lightning checkpoint safely: tensors and plain containers only, never pickled code."""

from __future__ import annotations

import pickle
from pathlib import Path

import torch

from ovdet.errors import CheckpointError


def load_checkpoint(path: str | Path, mmap: bool = False) -> dict:
    """The checkpoint dict, loaded with `weights_only=True`.

    mmap: map the tensors instead of reading them (a cheap check that the file is whole, for resuming).

    Raises:
        CheckpointError: the file is not a checkpoint, is truncated, or holds pickled objects
            (classes or functions that loading would import and run).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint '{path}' not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as err:
        raise unsafe_checkpoint_error(path, err) from None
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise CheckpointError(f"checkpoint '{path}' is truncated or not a PyTorch checkpoint ({err})") from None
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"checkpoint '{path}' holds a {type(ckpt).__name__}, not a checkpoint dict")
    return ckpt


def unsafe_checkpoint_error(path, err: pickle.UnpicklingError) -> CheckpointError:
    """The one-line error for a checkpoint that `weights_only=True` refused."""
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return CheckpointError(
        f"checkpoint '{path}' holds pickled objects that loading would execute, so it is refused "
        f"({first[:300]}); only load checkpoints written by `ovdet train`"
    )
