"""Training survives faults: SIGKILL mid-epoch resumes to the same final step; a NaN loss stops or skips cleanly."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from synthetic_coco import write_synthetic_coco
from test_training import compose_train, data_overrides

from ovdet.errors import NonFiniteLossError
from ovdet.training.checkpoint import load_checkpoint
from ovdet.training.run import train

TESTS = Path(__file__).resolve().parent
# 16 images (all with base boxes), 2 per batch: 8 optimizer steps per epoch, 16 in all; a step
# checkpoint every 3 steps; `ckpt_path=last` makes one command both start and resume.
RUN = ["data.batch_size=2", "trainer.max_epochs=2", "trainer.limit_train_batches=8", "logger=none",
       "callbacks.step_checkpoint.every_n_train_steps=3", "ckpt_path=last"]


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny tensors run best on one thread


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    return write_synthetic_coco(folder, num_images=16, seed=0, classes=("square", "circle")), folder / "images"


def exported_step(run_dir: Path) -> int:
    return json.loads((run_dir / "detector" / "config.json").read_text())["info"]["global_step"]


def start(command: list[str], cwd: Path, log: Path) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen(command, cwd=cwd, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)


@pytest.mark.slow
def test_sigkill_mid_epoch_resumes_to_the_same_final_step(tiny_clip_dir, data, tmp_path):
    reference = tmp_path / "reference"
    train(compose_train(tiny_clip_dir, reference, data, *RUN))  # the uninterrupted run, in this process
    assert exported_step(reference) == 16

    run_dir, marker = tmp_path / "run", tmp_path / "blocked.txt"
    command = [sys.executable, "-m", "ovdet.cli.main", "train", "experiment=smoke", f"model.clip={tiny_clip_dir}",
               *data_overrides(*data), *RUN, f"hydra.run.dir={run_dir}",
               "+callbacks.block._target_=fault_callbacks.BlockOnce", "+callbacks.block.at_step=5",
               f"+callbacks.block.marker={marker}"]
    proc = start(command, tmp_path, tmp_path / "first.log")
    deadline = time.monotonic() + 240
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert marker.exists(), (tmp_path / "first.log").read_text()[-3000:]
    os.kill(proc.pid, signal.SIGKILL)  # mid-epoch 0, two steps after the step-3 checkpoint
    assert proc.wait(timeout=60) == -signal.SIGKILL
    assert load_checkpoint(run_dir / "checkpoints" / "steps" / "last.ckpt")["global_step"] == 3
    assert not (run_dir / "detector").exists()

    resumed = start(command, tmp_path, tmp_path / "second.log")  # the very same command
    assert resumed.wait(timeout=300) == 0, (tmp_path / "second.log").read_text()[-3000:]
    assert "steps/last.ckpt" in (tmp_path / "second.log").read_text()  # it restored the step checkpoint
    assert exported_step(run_dir) == exported_step(reference) == 16
    assert load_checkpoint(run_dir / "checkpoints" / "last.ckpt")["global_step"] == 16


def test_nan_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(tiny_clip_dir, data, tmp_path):
    cfg = compose_train(tiny_clip_dir, tmp_path, data, *RUN, "+callbacks.nan._target_=fault_callbacks.NaNPixels",
                        "+callbacks.nan.at_batch=4")
    with pytest.raises(NonFiniteLossError, match=r"train/loss is nan at global step 4 \(epoch 0, batch 4\)") as err:
        train(cfg)
    last = tmp_path / "checkpoints" / "steps" / "last.ckpt"
    assert str(last) in str(err.value)
    ckpt = load_checkpoint(last)
    assert ckpt["global_step"] == 3
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())
    assert not (tmp_path / "detector").exists()  # no model is exported from a failed run


def test_nan_loss_can_skip_the_batch_instead(tiny_clip_dir, data, tmp_path):
    cfg = compose_train(tiny_clip_dir, tmp_path, data, *RUN, "module.nonfinite_loss=skip",
                        "+callbacks.nan._target_=fault_callbacks.NaNPixels", "+callbacks.nan.at_batch=4")
    with pytest.warns(UserWarning, match=r"train/loss is nan at global step 4 .*batch skipped"):
        train(cfg)
    assert exported_step(tmp_path) == 16  # the skipped batch still counts as a step; it changed no weight
    ckpt = load_checkpoint(tmp_path / "checkpoints" / "last.ckpt")
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())


def test_unknown_nonfinite_policy_is_refused(tiny_clip_dir, data, tmp_path):
    with pytest.raises(Exception, match="nonfinite_loss must be one of"):  # Hydra wraps the ValueError
        train(compose_train(tiny_clip_dir, tmp_path, data, *RUN, "module.nonfinite_loss=ignore"))
