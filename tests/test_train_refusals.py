"""`ovdet train` never trains over a finished run, a user's metrics.csv or model folder, and refuses before
Hydra writes anything into the run folder; a resumed run's metrics.csv holds every step once."""

import csv

import pytest
from test_train_checkpoints import data, run  # noqa: F401 - the same 8-image run (data is a fixture)

from ovdet import file_mark
from ovdet.cli.main import main
from ovdet.training.csv_log import MARK, after_checkpoint, read_metrics, write_metrics

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny tensors run best on one thread


def snapshot(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def error_lines(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.strip()]


def steps_logged(metrics) -> list[tuple]:
    """(step, epoch, which columns hold a value) per row: a row logged twice shows up twice."""
    _, rows = read_metrics(metrics)
    return [(r["step"], r.get("epoch", ""), tuple(sorted(k for k, v in r.items() if v and k != "step"))) for r in rows]


def test_a_new_run_into_a_finished_run_is_refused_and_overwrite_true_trains_over_it(tiny_clip_dir, data, tmp_path,
                                                                                     capsys):
    run_dir = tmp_path / "run"
    assert run(tiny_clip_dir, data, run_dir) == 0
    metrics = run_dir / "csv" / "metrics.csv"
    assert file_mark.is_ours(metrics) and metrics.read_text().splitlines()[0] == MARK
    before = snapshot(run_dir)
    capsys.readouterr()

    assert run(tiny_clip_dir, data, run_dir) == 2  # no ckpt_path: it would train from scratch over the run
    lines = error_lines(capsys)
    assert len(lines) == 1 and f"run folder '{run_dir}' already holds a run" in lines[0], lines
    assert "ckpt_path=last" in lines[0] and "hydra.run.dir" in lines[0] and "overwrite=true" in lines[0]
    assert snapshot(run_dir) == before  # .hydra/config.yaml included: refused before Hydra wrote it

    stale = run_dir / "checkpoints" / "epoch_007.ckpt"  # as a longer earlier run would have left
    stale.write_bytes((run_dir / "checkpoints" / "last.ckpt").read_bytes())
    assert run(tiny_clip_dir, data, run_dir, "overwrite=true") == 0
    assert not stale.exists()  # a later ckpt_path=last can never pick up the earlier run's weights
    logged = steps_logged(metrics)
    assert len(logged) == len(set(logged)) and logged == steps_logged_of(before, tmp_path)  # a new log, not twice


def steps_logged_of(files: dict, tmp_path):
    copy = tmp_path / "before.csv"
    copy.write_bytes(files["csv/metrics.csv"])
    return steps_logged(copy)


@pytest.mark.parametrize("planted", ["csv/metrics.csv", "detector/notes.txt"])
def test_a_users_file_in_the_run_folder_is_refused_before_hydra_writes(planted, tiny_clip_dir, data, tmp_path,
                                                                       capsys):
    run_dir = tmp_path / "run"
    mine = run_dir / planted
    mine.parent.mkdir(parents=True)
    mine.write_text("step,my_metric\n0,1.0\n")
    assert run(tiny_clip_dir, data, run_dir, "ckpt_path=last") == 2
    lines = error_lines(capsys)
    assert len(lines) == 1 and str(mine.parent if "detector" in planted else mine) in lines[0], lines
    assert mine.read_text() == "step,my_metric\n0,1.0\n" and not (run_dir / ".hydra").exists()
    assert sorted(p.name for p in run_dir.iterdir()) == [mine.parent.name]


def test_resume_drops_the_rows_logged_after_the_checkpoint(tiny_clip_dir, data, tmp_path):
    """A run SIGKILLed after its last checkpoint had logged more steps; resumed, each step is in the file once."""
    run_dir = tmp_path / "run"
    assert run(tiny_clip_dir, data, run_dir) == 0
    metrics = run_dir / "csv" / "metrics.csv"
    header, rows = read_metrics(metrics)
    first = steps_logged(metrics)
    ghost = {k: "" for k in header}  # what the killed attempt logged past the checkpoint (step 2 is epoch 1's first)
    write_metrics(metrics, header, rows + [{**ghost, "step": "2", "epoch": "1", header[0]: "999"},
                                           {**ghost, "step": "3", "epoch": "1", header[0]: "999"}])
    assert run(tiny_clip_dir, data, run_dir, "ckpt_path=last", "trainer.max_epochs=2") == 0
    logged = steps_logged(metrics)
    assert logged[: len(first)] == first and len(logged) > len(first)  # the first attempt's rows are kept
    assert len(logged) == len(set(logged)) and "999" not in metrics.read_text()


def test_after_checkpoint_keeps_the_validation_of_a_finished_epoch():
    # checkpoint at step 2 with epoch 0 done: epoch 0's validation at step 2 stays; step 2's training row goes
    assert not after_checkpoint({"step": "1", "epoch": "0"}, 2, 1)
    assert not after_checkpoint({"step": "2", "epoch": "0", "val/AP50": "0.1"}, 2, 1)
    assert after_checkpoint({"step": "2", "epoch": "1"}, 2, 1)
    assert after_checkpoint({"step": "2", "epoch": ""}, 2, 1)  # the learning rate, logged before step 3
    assert after_checkpoint({"step": "5", "epoch": "1"}, 2, 1)
    # a step checkpoint from before epoch 0's end (epoch not done): its validation is run again
    assert after_checkpoint({"step": "2", "epoch": "0", "val/AP50": "0.1"}, 2, 0)
    assert after_checkpoint({"step": "0", "epoch": "0"}, 0, 0)  # a new run: every row


@pytest.mark.parametrize("overrides, message", [
    (["trainer.max_epochs=-1"], "trainer.max_epochs=-1 (no epoch limit) with no trainer.max_steps would train forever"),
    (["trainer.max_epochs=-3"], "trainer.max_epochs=-3 is not a number of epochs"),
    (["trainer.max_steps=0"], "trainer.max_steps=0 is not a number of steps"),
])
def test_trainer_limits_that_never_end_are_one_line_before_anything_is_written(overrides, message, tmp_path, capsys):
    run_dir = tmp_path / "run"
    code = main(["train", "experiment=smoke", f"hydra.run.dir={run_dir}", f"model.clip={tmp_path / 'no-clip'}",
                 *overrides])  # fmt: skip
    lines = error_lines(capsys)
    assert code == 2 and len(lines) == 1 and message in lines[0], lines
    assert not run_dir.exists()


def test_max_epochs_minus_one_with_max_steps_trains(tiny_clip_dir, data, tmp_path):
    """Lightning's -1 is "no epoch limit": with trainer.max_steps it ends (no OverflowError from the schedule)."""
    run_dir = tmp_path / "run"
    assert run(tiny_clip_dir, data, run_dir, "trainer.max_epochs=-1", "trainer.max_steps=3") == 0
    with open(run_dir / "csv" / "metrics.csv", newline="") as f:
        next(f)
        assert max(int(float(r["step"])) for r in csv.DictReader(f)) >= 2
