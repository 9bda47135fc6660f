"""Checkpoints are written atomically; resume takes the newest one that loads; a finished run stays finished."""

import errno
import os
import time

import pytest
import torch
from synthetic_coco import write_synthetic_coco
from test_training import data_overrides

from ovdet.cli.main import main
from ovdet.training.checkpoint import load_checkpoint
from ovdet.training.checkpoint_io import AtomicCheckpointIO

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny tensors run best on one thread


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    return write_synthetic_coco(folder, num_images=8, seed=0, classes=("square", "circle")), folder / "images"


def run(tiny_clip_dir, data, run_dir, *overrides) -> int:
    """`ovdet train` as a user types it (through the CLI entry function); 8 images, 4 per batch: 2 steps an epoch."""
    return main(["train", "experiment=smoke", f"model.clip={tiny_clip_dir}", *data_overrides(*data),
                 "data.batch_size=4", "trainer.max_epochs=1", f"hydra.run.dir={run_dir}", *overrides])


def test_checkpoint_io_renames_a_whole_file_into_place(tmp_path):
    path = tmp_path / "checkpoints" / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"state_dict": {"w": torch.ones(3)}, "loops": {}}, path)
    assert torch.equal(load_checkpoint(path)["state_dict"]["w"], torch.ones(3))
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]  # no temp file left behind


def test_a_failed_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"state_dict": {"w": torch.zeros(2)}}, path)
    before = path.read_bytes()

    def disk_full(obj, file, *args, **kwargs):  # half a file, then ENOSPC, as a full disk does
        file.write(before[: len(before) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(OSError, match="No space left"):
        AtomicCheckpointIO().save_checkpoint({"state_dict": {"w": torch.ones(2)}}, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_resume_skips_a_truncated_newest_checkpoint_with_one_warning(tiny_clip_dir, data, tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert run(tiny_clip_dir, data, run_dir) == 0
    checkpoints = run_dir / "checkpoints"
    assert not [p for p in checkpoints.rglob("*") if p.name.endswith(".tmp")]
    # What a kill -9 or a full disk in the middle of Lightning's own in-place write leaves: the newest file, cut short.
    newest = checkpoints / "steps" / "last.ckpt"
    newest.write_bytes(newest.read_bytes()[:4096])
    now = time.time()
    os.utime(checkpoints / "last.ckpt", (now - 60, now - 60))
    os.utime(newest, (now, now))
    capsys.readouterr()

    assert run(tiny_clip_dir, data, run_dir, "ckpt_path=last", "trainer.max_epochs=2") == 0
    out = capsys.readouterr()
    warnings = [line for line in out.err.splitlines() if "skipping checkpoint" in line]
    assert len(warnings) == 1 and str(newest) in warnings[0] and warnings[0].startswith("ovdet train: warning:")
    assert load_checkpoint(checkpoints / "last.ckpt")["global_step"] == 4  # resumed at step 2, trained epoch 2


def test_a_finished_run_says_already_complete_and_keeps_every_log(tiny_clip_dir, data, tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert run(tiny_clip_dir, data, run_dir, "ckpt_path=last") == 0  # starts afresh: nothing to resume
    first = capsys.readouterr().out
    metrics = run_dir / "csv" / "metrics.csv"
    rows = metrics.read_bytes()
    assert f"model folder: {run_dir / 'detector'}" in first and f"logs: {metrics}" in first

    assert run(tiny_clip_dir, data, run_dir, "ckpt_path=last") == 0
    out = capsys.readouterr().out
    assert "run already complete" in out and "trainer.max_epochs=1" in out
    assert metrics.read_bytes() == rows
    assert (run_dir / "detector" / "config.json").is_file() and not (run_dir / "train.lock").exists()


def test_a_complete_run_without_its_model_folder_exports_it(tiny_clip_dir, data, tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert run(tiny_clip_dir, data, run_dir) == 0
    for path in sorted((run_dir / "detector").rglob("*"), reverse=True):  # killed while exporting
        path.rmdir() if path.is_dir() else path.unlink()
    capsys.readouterr()
    assert run(tiny_clip_dir, data, run_dir, "ckpt_path=last") == 0
    assert "exported the model folder" in capsys.readouterr().out
    assert (run_dir / "detector" / "config.json").is_file()


def test_a_killed_run_resumed_keeps_the_rows_it_had_logged(tiny_clip_dir, data, tmp_path):
    run_dir = tmp_path / "run"
    assert run(tiny_clip_dir, data, run_dir) == 0
    metrics = run_dir / "csv" / "metrics.csv"
    before = metrics.read_text().splitlines()
    assert run(tiny_clip_dir, data, run_dir, "ckpt_path=last", "trainer.max_epochs=2") == 0
    after = metrics.read_text().splitlines()
    assert after[: len(before)] == before and len(after) > len(before)  # Lightning's logger deleted the file
