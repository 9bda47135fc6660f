"""SIGTERM (a scheduler's preemption, `kill`, `docker stop`): save a checkpoint, say so, exit 143."""

from __future__ import annotations

from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException

EXIT_CODE = 143  # 128 + SIGTERM, what a shell reports for a process the signal ended


class TrainingStopped(RuntimeError):
    """Training was stopped by SIGTERM; the message says which checkpoint resumes it."""

    exit_code = EXIT_CODE


class CheckpointOnSigterm(L.Callback):
    """On SIGTERM, write `last.ckpt` into the step checkpoint folder (else the first checkpoint folder).

    Lightning notices the signal after the current training batch (or validation batch) and raises
    `SIGTERMException`, a `SystemExit` that would end the process with status 0; this callback saves
    the state at that point, so `ckpt_path=last` continues from the step the run had reached.
    Nothing is saved when the run has no `ModelCheckpoint` (`callbacks=none`).
    """

    def __init__(self) -> None:
        self.saved: Path | None = None

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if not isinstance(exception, SIGTERMException):
            return
        target = self.target(trainer)
        if target is not None:
            trainer.save_checkpoint(target)  # every rank takes part; rank 0 writes
            self.saved = target

    @staticmethod
    def target(trainer: L.Trainer) -> Path | None:
        checkpoints = [cb for cb in trainer.checkpoint_callbacks if isinstance(cb, ModelCheckpoint) and cb.dirpath]
        stepwise = [cb for cb in checkpoints if cb._every_n_train_steps]
        chosen = (stepwise or checkpoints or [None])[0]
        return Path(chosen.dirpath) / f"{ModelCheckpoint.CHECKPOINT_NAME_LAST}{chosen.FILE_EXTENSION}" if chosen else None


def stopped_error(trainer: L.Trainer, callback: CheckpointOnSigterm) -> TrainingStopped:
    """The one-line report of a SIGTERM stop."""
    where = f"global step {trainer.global_step} (epoch {trainer.current_epoch})"
    if callback.saved is None:
        return TrainingStopped(f"stopped by SIGTERM at {where}; no checkpoint folder, so nothing was saved")
    return TrainingStopped(
        f"stopped by SIGTERM at {where}; saved '{callback.saved}'; run the same command with ckpt_path=last "
        "(and the same hydra.run.dir) to resume"
    )
