"""One `ovdet train` per run folder: a second one is refused in one line; a dead run's lock is taken over."""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
from synthetic_coco import write_synthetic_coco
from test_training import data_overrides

from ovdet.cli.main import main
from ovdet.training.run_lock import LOCK_NAME

TESTS = Path(__file__).resolve().parent

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny tensors run best on one thread


class HoldUntil(L.Callback):
    """After the first optimizer step, write `marker` and wait (at most 2 min) until `release` exists."""

    def __init__(self, marker: str, release: str):
        self.marker, self.release = Path(marker), Path(release)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == 1:
            self.marker.write_text(str(os.getpid()))
            deadline = time.monotonic() + 120
            while not self.release.exists() and time.monotonic() < deadline:
                time.sleep(0.05)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    return write_synthetic_coco(folder, num_images=4, seed=0), folder / "images"


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()}


def test_a_second_run_into_a_busy_folder_is_refused_and_changes_nothing(tiny_clip_dir, data, tmp_path, capsys):
    run_dir, marker, release = tmp_path / "run", tmp_path / "holding.txt", tmp_path / "release.txt"
    args = ["train", "experiment=smoke", f"model.clip={tiny_clip_dir}", *data_overrides(*data), "data.batch_size=2",
            f"hydra.run.dir={run_dir}"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    hold = ["+callbacks.hold._target_=test_train_lock.HoldUntil", f"+callbacks.hold.marker={marker}",
            f"+callbacks.hold.release={release}"]
    first = subprocess.Popen([sys.executable, "-m", "ovdet.cli.main", *args, *hold], cwd=tmp_path, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while not marker.exists() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert marker.exists(), first.communicate()[1][-3000:]
        lock = json.loads((run_dir / LOCK_NAME).read_text())
        assert lock["pid"] == first.pid and lock["host"] == socket.gethostname()
        before = snapshot(run_dir)

        assert main(args) == 2  # the second run, into the same folder
        lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("ovdet train: error:") and f"pid {first.pid}" in lines[0]
        assert snapshot(run_dir) == before  # not even Hydra's .hydra/ files were rewritten
    finally:
        release.write_text("go")
        _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err[-3000:]
    assert (run_dir / "csv" / "metrics.csv").is_file() and (run_dir / "detector" / "config.json").is_file()
    assert not (run_dir / LOCK_NAME).exists()


def test_the_lock_of_a_run_that_died_is_taken_over(tiny_clip_dir, data, tmp_path, capsys):
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(gone.stdout)  # that process has exited (a SIGKILLed run leaves its lock like this)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / LOCK_NAME).write_text(json.dumps({"pid": dead_pid, "host": socket.gethostname(), "started": "x"}))
    args = ["train", "experiment=smoke", f"model.clip={tiny_clip_dir}", *data_overrides(*data), "debug=fast_dev_run",
            f"hydra.run.dir={run_dir}"]
    assert main(args) == 0
    assert f"took over the lock of a run that is gone (pid {dead_pid})" in capsys.readouterr().err
    assert not (run_dir / LOCK_NAME).exists()
