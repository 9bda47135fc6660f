"""A CSV logger whose `metrics.csv` carries ovdet's mark, survives resumes, and never holds a step twice.

The file starts with the mark line (`# written by ovdet`, see `ovdet.file_mark`), then Lightning's header
and rows. A resumed run continues it; rows logged after the checkpoint it resumes from (a run killed at
step M and resumed from step N < M logged N..M already) are dropped first, since the run logs them again.
A `metrics.csv` without the mark is the user's: it is refused, never appended to.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment

from ovdet import file_mark
from ovdet.errors import OvdetError
from ovdet.safe_write import atomic_write_text

MARK = file_mark.TEXT_MARKS[".csv"]


def check_metrics_file(path: str | Path, overwrite: bool = False) -> None:
    """Refuse (one line) an existing `metrics.csv` that ovdet did not write, unless `overwrite`."""
    path = Path(path)
    if overwrite or not path.exists() or file_mark.is_ours(path):
        return
    raise OvdetError(
        f"'{path}' exists and was not written by ovdet; ovdet train appends only to a metrics.csv it wrote: "
        "choose a new hydra.run.dir or pass overwrite=true to replace it"
    )


def read_metrics(path: str | Path) -> tuple[list[str], list[dict[str, str]]]:
    """The header and rows of a marked `metrics.csv` (the mark line skipped)."""
    with open(path, newline="", encoding="utf-8") as f:
        if f.readline().rstrip("\r\n") != MARK:
            f.seek(0)
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


def write_metrics(path: str | Path, header: list[str], rows: list[dict]) -> None:
    """Write the mark line, `header` and `rows` to `path`, whole or not at all."""
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=header)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, f"{MARK}\n{text.getvalue()}")


def after_checkpoint(row: dict, global_step: int, epochs_done: int) -> bool:
    """True for a row a run resumed from (global_step, epochs_done) logs again.

    Lightning logs step k's training metrics (and the learning rate before it) at `step` k - 1, and an
    epoch's validation at the step that ends it: rows at a later step are redone, and so are those at the
    checkpoint's own step, except the validation of an epoch the checkpoint finished.
    """
    try:
        step = int(float(row.get("step") or -1))
    except ValueError:
        return False
    if step != global_step:
        return step > global_step
    try:
        return int(float(row.get("epoch") or epochs_done)) >= epochs_done
    except ValueError:
        return True


class AppendingWriter(ExperimentWriter):
    """Lightning's writer, but an existing (marked) `metrics.csv` is continued: its columns are taken over,
    and a new column rewrites the file with every old row kept. Every write keeps the mark line first."""

    def _check_log_dir_exists(self) -> None:
        path = Path(self.metrics_file_path)
        if not path.is_file():
            return
        check_metrics_file(path)
        header, _ = read_metrics(path)
        self.metrics_keys = sorted(set(header))

    def save(self) -> None:
        if not self.metrics:
            return
        path = Path(self.metrics_file_path)
        new_keys = self._record_new_keys()
        if new_keys or not path.is_file():
            _, old = read_metrics(path) if path.is_file() else ([], [])
            write_metrics(path, self.metrics_keys, old + self.metrics)
        else:
            with open(path, "a", newline="", encoding="utf-8") as f:
                csv.DictWriter(f, fieldnames=self.metrics_keys).writerows(self.metrics)
        self.metrics = []


class ResumableCSVLogger(CSVLogger):
    """`CSVLogger` (same arguments) whose `metrics.csv` is marked and survives `ckpt_path=...` resumes."""

    @property
    def metrics_path(self) -> Path:
        return Path(self.log_dir) / ExperimentWriter.NAME_METRICS_FILE

    def continue_from(self, global_step: int, epochs_done: int) -> None:
        """Before `fit`: drop the rows a run starting at (global_step, epochs_done) will log again
        (0, 0: a new run, every row). Call on the main process only."""
        path = self.metrics_path
        if not path.is_file():
            return
        header, rows = read_metrics(path)
        kept = [r for r in rows if not after_checkpoint(r, global_step, epochs_done)]
        if not kept:
            path.unlink()
        elif len(kept) < len(rows) or not file_mark.is_ours(path):
            write_metrics(path, header, kept)

    @property
    @rank_zero_experiment
    def experiment(self) -> AppendingWriter:
        if self._experiment is not None:
            return self._experiment
        self._fs.makedirs(self.root_dir, exist_ok=True)
        self._experiment = AppendingWriter(log_dir=self.log_dir)
        return self._experiment
