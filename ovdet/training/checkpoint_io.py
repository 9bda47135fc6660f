"""Write checkpoints so that a kill or a full disk never leaves a truncated file under a checkpoint's name."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from ovdet.safe_write import fsync_folder


class AtomicCheckpointIO(TorchCheckpointIO):
    """`TorchCheckpointIO` that writes `NAME.ckpt` as a temp file in the same folder, fsyncs it and renames it.

    A rename within one folder is atomic: `last.ckpt` is the old whole file or the new whole file,
    never half of one. A failed write (no space left) removes the temp file and raises, so the
    previous checkpoint stays. Remote paths (`s3://...`) go through Lightning's own writer.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if "://" in str(path) or storage_options is not None:
            return super().save_checkpoint(checkpoint, path, storage_options)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # not *.ckpt: never taken for a checkpoint
        try:
            with open(temp, "wb") as file:
                torch.save(checkpoint, file)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temp, path)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        fsync_folder(path.parent)  # the rename itself survives a power cut



def use_atomic_checkpoints(trainer) -> None:
    """Give the trainer's strategy an `AtomicCheckpointIO` unless it brought its own (FSDP, DeepSpeed, async)."""
    if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:
        trainer.strategy.checkpoint_io = AtomicCheckpointIO()
