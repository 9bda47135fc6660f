"""A CSV logger that keeps the rows already in `metrics.csv` when a run resumes, instead of deleting them."""

from __future__ import annotations

import csv

from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment


class AppendingWriter(ExperimentWriter):
    """Lightning's writer, but an existing `metrics.csv` is continued: its columns are taken over, and a
    new column rewrites the file with every old row kept (Lightning's own header rewrite).

    A run resumed from step N after being killed at step M > N logs steps N+1..M twice: once from
    the killed attempt, once again; the `step` column tells them apart by order.
    """

    def _check_log_dir_exists(self) -> None:
        if not self._fs.isfile(self.metrics_file_path):
            return
        with self._fs.open(self.metrics_file_path, "r", newline="") as file:
            header = next(csv.reader(file), [])
        self.metrics_keys = sorted(set(header))


class ResumableCSVLogger(CSVLogger):
    """`CSVLogger` (same arguments) whose `metrics.csv` survives `ckpt_path=...` resumes."""

    @property
    @rank_zero_experiment
    def experiment(self) -> AppendingWriter:
        if self._experiment is not None:
            return self._experiment
        self._fs.makedirs(self.root_dir, exist_ok=True)
        self._experiment = AppendingWriter(log_dir=self.log_dir)
        return self._experiment
