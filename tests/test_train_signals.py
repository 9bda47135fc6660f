"""SIGTERM saves a checkpoint, says so in one line and exits 143; the same command with ckpt_path=last resumes."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
from synthetic_coco import write_synthetic_coco
from test_training import data_overrides

from ovdet.cli.main import main
from ovdet.training.checkpoint import load_checkpoint

TESTS = Path(__file__).resolve().parent
# 16 images, 2 per batch: 8 steps an epoch, 16 in all (as tests/test_training_faults.py).
RUN = ["data.batch_size=2", "trainer.max_epochs=2", "trainer.limit_train_batches=8", "logger=none", "ckpt_path=last"]

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny tensors run best on one thread


class FakeSigterm(L.Callback):
    """Flag a SIGTERM after optimizer step `at_step`, as Lightning's own signal handler does."""

    def __init__(self, at_step: int):
        self.at_step = at_step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.at_step:
            trainer._signal_connector.received_sigterm = True


class WaitForSigterm(L.Callback):
    """After step `at_step`, write `marker` and wait (at most 2 min) for a real SIGTERM; a rerun goes on."""

    def __init__(self, at_step: int, marker: str):
        self.at_step = at_step
        self.marker = Path(marker)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.at_step and not self.marker.exists():
            self.marker.write_text(str(os.getpid()))
            deadline = time.monotonic() + 120
            while not trainer.received_sigterm and time.monotonic() < deadline:
                time.sleep(0.05)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    return write_synthetic_coco(folder, num_images=16, seed=0, classes=("square", "circle")), folder / "images"


def command(tiny_clip_dir, data, run_dir, *extra) -> list[str]:
    return ["train", "experiment=smoke", f"model.clip={tiny_clip_dir}", *data_overrides(*data), *RUN,
            f"hydra.run.dir={run_dir}", *extra]


def exported_step(run_dir: Path) -> int:
    return json.loads((run_dir / "detector" / "config.json").read_text())["info"]["global_step"]


def test_sigterm_saves_a_checkpoint_and_exits_143_then_resumes(tiny_clip_dir, data, tmp_path, capsys):
    run_dir = tmp_path / "run"
    stop = ["+callbacks.term._target_=test_train_signals.FakeSigterm", "+callbacks.term.at_step=5"]
    assert main(command(tiny_clip_dir, data, run_dir, *stop)) == 143
    lines = [line for line in capsys.readouterr().err.splitlines() if "SIGTERM" in line]
    saved = run_dir / "checkpoints" / "steps" / "last.ckpt"
    assert len(lines) == 1 and lines[0].startswith("ovdet train: stopped by SIGTERM at global step 5")
    assert str(saved) in lines[0] and "ckpt_path=last" in lines[0]
    assert load_checkpoint(saved)["global_step"] == 5
    assert not (run_dir / "detector").exists() and not (run_dir / "train.lock").exists()

    assert main(command(tiny_clip_dir, data, run_dir)) == 0
    assert exported_step(run_dir) == 16  # as an uninterrupted run


@pytest.mark.slow
def test_a_real_sigterm_to_ovdet_train_stops_it_with_143(tiny_clip_dir, data, tmp_path):
    run_dir, marker = tmp_path / "run", tmp_path / "waiting.txt"
    args = command(tiny_clip_dir, data, run_dir, "+callbacks.wait._target_=test_train_signals.WaitForSigterm",
                   "+callbacks.wait.at_step=5", f"+callbacks.wait.marker={marker}")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-m", "ovdet.cli.main", *args], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert marker.exists(), proc.communicate()[1][-3000:]
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-3000:]
    assert "ovdet train: stopped by SIGTERM at global step 5" in err and "Traceback" not in err
    assert load_checkpoint(run_dir / "checkpoints" / "steps" / "last.ckpt")["global_step"] == 5
    assert not (run_dir / "detector").exists() and not (run_dir / "train.lock").exists()

    resumed = subprocess.run([sys.executable, "-m", "ovdet.cli.main", *args], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert exported_step(run_dir) == 16
