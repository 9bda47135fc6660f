"""`ovdet train` as README.md shows it, on a fresh clone; every failure is one line; relative paths are the user's."""

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
from synthetic_coco import write_synthetic_coco
from test_training import data_overrides

from ovdet.cli.main import main

REPO = Path(__file__).resolve().parents[1]
PACKAGED_CLIP = REPO / "ovdet" / "assets" / "default_model" / "clip"
NOISE = ("💡", "litlogger", "litmodels", "TPU available", "LeafSpec", "module(s) in eval mode", "Traceback",
         "Total Flops", "FLOPs")


def ovdet(*args: str, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    """The `ovdet` console script, from a folder with nothing in it: a fresh clone has no data/ or artifacts/."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OVDET_")}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1")
    script = Path(sys.executable).with_name("ovdet")
    return subprocess.run([str(script), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def test_readme_smoke_commands_run_as_written(tmp_path):
    """README: `ovdet train experiment=smoke hydra.run.dir=runs/a ckpt_path=last` starts a run (data and the
    packaged CLIP need nothing prepared), says where its outputs are, and run again says it is complete."""
    first = ovdet("train", "experiment=smoke", "hydra.run.dir=runs/a", "ckpt_path=last", cwd=tmp_path)
    log = first.stdout + first.stderr
    assert first.returncode == 0, log[-3000:]
    run = tmp_path / "runs" / "a"
    assert (tmp_path / "data" / "shapeworld_smoke" / "train" / "instances.json").is_file()  # generated on demand
    assert f"model folder: {run / 'detector'}" in first.stdout and f"logs: {run / 'csv' / 'metrics.csv'}" in first.stdout
    assert not [word for word in NOISE if word in log], log[-3000:]
    config = json.loads((run / "detector" / "config.json").read_text())
    assert config["info"]["recipe"]["model"]["clip"] == str(PACKAGED_CLIP)
    rows = (run / "csv" / "metrics.csv").read_bytes()

    again = ovdet("train", "experiment=smoke", "hydra.run.dir=runs/a", "ckpt_path=last", cwd=tmp_path)
    assert again.returncode == 0 and "run already complete" in again.stdout, again.stderr[-3000:]
    assert (run / "csv" / "metrics.csv").read_bytes() == rows

    printed = ovdet("train", "experiment=smoke", "--cfg", "job", cwd=tmp_path)
    assert printed.returncode == 0 and "name: smoke" in printed.stdout


def test_readme_shapeworld_ovd_runs_on_a_fresh_clone(tmp_path):
    """`ovdet train experiment=shapeworld_ovd` (README) trains 10 epochs on 8000 generated images, hours on a CPU:
    here the same command with a smaller generated set and a two-batch trainer."""
    shrink = ["data.generate.train.num_images=8", "data.generate.val.num_images=4", "data.batch_size=4",
              "data.num_workers=0", "trainer.max_epochs=1", "trainer.limit_train_batches=2",
              "trainer.limit_val_batches=1", "trainer.num_sanity_val_steps=0", "hydra.run.dir=run"]
    proc = ovdet("train", "experiment=shapeworld_ovd", *shrink, cwd=tmp_path)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert "generating it" in proc.stdout and (tmp_path / "data" / "shapeworld" / "val" / "instances.json").is_file()
    config = json.loads((tmp_path / "run" / "detector" / "config.json").read_text())
    assert config["info"]["recipe"]["model"]["clip"] == str(PACKAGED_CLIP)


@pytest.mark.parametrize("command", [
    ["experiment=ovcoco_clip_b32", "paths.data_dir=/data"],
    ["experiment=ovcoco_clip_b16", "trainer=ddp", "trainer.devices=4"],
    ["experiment=ovcoco_clip_b32", "ckpt_path=.../last.ckpt"],
])
def test_readme_coco_commands_say_in_one_line_what_is_missing(command, tmp_path, capsys, monkeypatch):
    """No COCO and no OpenAI CLIP on this machine: one line naming the model it looked for, exit 2."""
    monkeypatch.chdir(tmp_path)
    assert main(["train", *command, "hydra.run.dir=run"]) == 2
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and lines[0].startswith("ovdet train: error:"), lines
    assert "openai/clip-vit-base-patch" in lines[0] and "local cache" in lines[0]


def test_relative_paths_are_read_from_where_ovdet_train_started(tiny_clip_dir, tmp_path, monkeypatch):
    """With Hydra changing into the run folder, relative data and CLIP paths still mean the user's folder."""
    shutil.copytree(tiny_clip_dir, tmp_path / "my_clip")
    write_synthetic_coco(tmp_path / "sets", num_images=4, seed=0)
    monkeypatch.chdir(tmp_path)
    overrides = [*data_overrides(Path("sets/instances.json"), Path("sets/images")), "model.clip=my_clip",
                 "debug=fast_dev_run", "hydra.job.chdir=true", f"hydra.run.dir={tmp_path / 'run'}"]
    assert main(["train", "experiment=smoke", *overrides]) == 0
    recipe = json.loads((tmp_path / "run" / "detector" / "config.json").read_text())["info"]["recipe"]
    assert recipe["model"]["clip"] == str(tmp_path / "my_clip")
    assert recipe["data"]["train_json"] == str(tmp_path / "sets" / "instances.json")


def test_a_missing_relative_clip_folder_is_not_taken_for_a_hub_id(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "experiment=shapeworld_ovd", "model.clip=artifacts/shapeworld_clip", "hydra.run.dir=r"]) == 2
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and f"'{tmp_path / 'artifacts' / 'shapeworld_clip'}' does not exist" in lines[0]


class Boom(L.Callback):
    """Fails the way a bug deep in a library would (built by Hydra from an override)."""

    def on_train_start(self, trainer, pl_module):
        raise RuntimeError("something deep\ninside broke")


@pytest.mark.parametrize("overrides, expected", [
    (["no_such_key=1"], "Could not override 'no_such_key'"),
    (["experiment=nope"], "Could not find 'experiment/nope'"),
    (["trainer.max_epochs=many"], "trainer.max_epochs=many is not a number of epochs"),
    (["data.train_json=missing/instances.json", "data.generate=null"], "missing/instances.json"),
    (["+callbacks.boom._target_=test_train_cli.Boom"], "RuntimeError: something deep inside broke"),
])
def test_every_failure_is_one_error_line(overrides, expected, tiny_clip_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    code = main(["train", "experiment=smoke", f"model.clip={tiny_clip_dir}", "hydra.run.dir=run", *overrides])
    captured = capsys.readouterr()
    lines = error_lines(captured.err)
    assert code == 2 and len(lines) == 1 and lines[0].startswith("ovdet train: error:"), captured.err[-2000:]
    assert expected in lines[0] and "Traceback" not in captured.out + captured.err


def train_commands() -> list[str]:
    """Every `ovdet train ...` line of README.md's "Train a head" section and of `ovdet train --help`."""
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("### Train a head"):readme.index("### Evaluate")]
    help_text = (REPO / "conf" / "hydra" / "default.yaml").read_text()
    lines = [line.split("#")[0].strip() for text in (section, help_text) for line in text.splitlines()]
    return sorted({line for line in lines if line.startswith("ovdet train ") and "[" not in line})


@pytest.mark.parametrize("line", train_commands())
def test_every_documented_train_command_composes(line):
    """The commands the tests above do not run (COCO, DDP) at least name configs that exist."""
    from hydra import compose, initialize_config_dir

    from ovdet.cli.train import config_dir

    overrides = [word for word in shlex.split(line)[2:] if not word.startswith("-") and word != "job"]
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    assert cfg.name in line or cfg.name == "train"


def test_a_pretraining_experiment_is_named_with_the_command_that_runs_it(capsys):
    """`ovdet train --help` lists conf/experiment/, which holds shapeworld_clip for tools/pretrain_clip.py:
    asking ovdet train for it gets that command, not Hydra's "Could not override 'clip'"."""
    from ovdet.cli.main import main

    assert main(["train", "experiment=shapeworld_clip"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "tools/pretrain_clip.py experiment=shapeworld_clip" in err
    assert "Could not override" not in err
