"""Which checkpoint a run resumes from, and whether that run has anything left to train.

`ckpt_path=last` is resolved here, not by Lightning: Lightning takes the newest `last*.ckpt` by
modification time even when that file is truncated. Here every `*.ckpt` in the run's checkpoint
folders is a candidate, newest first, and the first one that loads is taken; a broken one is
skipped with a warning line.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ovdet.errors import CheckpointError
from ovdet.training.checkpoint import load_checkpoint
from ovdet.training.config_paths import LIGHTNING_CKPT_NAMES
from ovdet.training.messages import say


@dataclass(frozen=True)
class CheckpointState:
    """Where a checkpoint stands: its file, optimizer steps taken and epochs fully trained."""

    path: Path
    global_step: int
    epochs_done: int


def resume_checkpoint(ckpt_path: str | None, trainer) -> CheckpointState | str | None:
    """The checkpoint `trainer.fit` should resume from.

    Args:
        ckpt_path: None (a new run), "last" (the newest checkpoint of this run folder that loads, or
            None when there is none), a file (checked before use), or another Lightning name ("best").
        trainer: the built trainer; its `ModelCheckpoint` folders are searched for "last".
    Raises:
        CheckpointError: the named file is missing, truncated or holds pickled code; or a candidate
            for "last" holds pickled code (refused, never skipped).
    """
    if ckpt_path is None:
        return None
    if ckpt_path != "last":
        return ckpt_path if ckpt_path in LIGHTNING_CKPT_NAMES else read_state(Path(ckpt_path))
    folders = sorted({Path(cb.dirpath) for cb in trainer.checkpoint_callbacks if getattr(cb, "dirpath", None)})
    candidates = [p for folder in folders if folder.is_dir() for p in folder.glob("*.ckpt") if p.is_file()]
    for path in sorted(candidates, key=lambda p: (p.stat().st_mtime, p.name), reverse=True):
        try:
            return read_state(path)
        except CheckpointError as err:
            if "pickled objects" in str(err):
                raise
            say(f"warning: skipping checkpoint '{path}': {err}", err=True)
    where = ", ".join(f"'{f}'" for f in folders) or "(no checkpoint folder configured)"
    if candidates:
        say(f"warning: ckpt_path=last: none of the {len(candidates)} checkpoints in {where} loads; "
            "starting a new run", err=True)
    else:
        say(f"ckpt_path=last: no checkpoint in {where} yet; starting a new run")
    return None


def read_state(path: Path) -> CheckpointState:
    """Load `path` memory-mapped (cheap: tensors are not read) and note how far it trained."""
    ckpt = load_checkpoint(path, mmap=True)
    if "state_dict" not in ckpt or "loops" not in ckpt:
        raise CheckpointError(f"checkpoint '{path}' is not a Lightning training checkpoint (no state_dict/loops)")
    return CheckpointState(path, int(ckpt.get("global_step", 0)), _epochs_done(ckpt))


def _epochs_done(ckpt: dict) -> int:
    """Epochs trained to the end: Lightning's `processed` count, set before the epoch-end hooks that write
    the epoch checkpoint. A step checkpoint from an epoch's last batch does not count that epoch, so
    resuming from it runs the epoch's end (validation, checkpoint, export)."""
    epoch = ckpt["loops"].get("fit_loop", {}).get("epoch_progress", {}).get("current", {})
    return int(epoch.get("processed", 0))


def is_complete(state: CheckpointState, trainer) -> bool:
    """True when resuming from `state` would train nothing: max_steps or max_epochs is reached."""
    if getattr(trainer, "fast_dev_run", False):
        return False
    max_steps = trainer.max_steps
    if max_steps is not None and max_steps >= 0 and state.global_step >= max_steps:
        return True
    max_epochs = trainer.max_epochs
    return max_epochs is not None and max_epochs >= 0 and state.epochs_done >= max_epochs
