"""Lightning callbacks that inject faults into a training run (built by Hydra from test overrides)."""

from __future__ import annotations

import time
from pathlib import Path

import lightning as L


class BlockOnce(L.Callback):
    """After optimizer step `at_step`, write `marker` and wait to be killed; a rerun (marker present) goes on.

    The test sends SIGKILL once the marker appears, so the kill lands at a known step, mid-epoch.
    """

    def __init__(self, at_step: int, marker: str):
        self.at_step = at_step
        self.marker = Path(marker)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.at_step and not self.marker.exists():
            self.marker.write_text(str(trainer.global_step))
            time.sleep(600)


class NaNPixels(L.Callback):
    """Fill the batch's pixels with NaN before training batch `at_batch` (counted over the run)."""

    def __init__(self, at_batch: int):
        self.at_batch = at_batch
        self.seen = 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.seen == self.at_batch:
            batch["pixel_values"].fill_(float("nan"))
        self.seen += 1
