"""Model folders: writing one never deletes what ovdet did not write; loading one never reads outside it
or from a pickle."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from transformers import CLIPModel

from ovdet.cli.main import main
from ovdet.errors import ModelNotAvailableError, OvdetError
from ovdet.models.detector import Detector
from ovdet.models.model_folder import record_checksums

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
from pickle_payload import MARKER, Payload  # noqa: E402  (tests/ is on sys.path: conftest)


@pytest.fixture(scope="module")
def detector(tiny_clip_dir):
    return Detector.from_clip(str(tiny_clip_dir), image_size=32)


@pytest.fixture(scope="module")
def saved(detector, tmp_path_factory):
    return detector.save_pretrained(tmp_path_factory.mktemp("m") / "det")


@pytest.fixture()
def model(saved, tmp_path):
    return Path(shutil.copytree(saved, tmp_path / "det", symlinks=True))


@pytest.fixture(scope="module")
def checkpoint(detector, tiny_clip_dir, tmp_path_factory):
    """What `ovdet train` saves, as far as `ovdet export-ckpt` reads it."""
    path = tmp_path_factory.mktemp("ckpt") / "last.ckpt"
    state = {f"detector.{k}": v for k, v in detector.state_dict().items()}
    torch.save({"state_dict": state, "ovdet_detector": detector.config(str(tiny_clip_dir)), "global_step": 1}, path)
    return path


def user_files(folder: Path) -> dict[str, str]:
    folder.mkdir(parents=True, exist_ok=True)
    files = {"thesis.tex": "years of work", "photos/cat.jpg": "a cat"}
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    return files


def still_there(folder: Path, files: dict[str, str]) -> bool:
    return all((folder / n).is_file() and (folder / n).read_text() == t for n, t in files.items())


def test_export_ckpt_refuses_a_folder_ovdet_did_not_write(checkpoint, tmp_path, capsys):
    target = tmp_path / "documents"
    files = user_files(target)
    assert main(["export-ckpt", str(checkpoint), str(target)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is not empty and is not an ovdet model folder" in err[0], err
    assert still_there(target, files) and sorted(p.name for p in tmp_path.iterdir()) == ["documents"]


def test_export_ckpt_into_the_current_folder_deletes_nothing(checkpoint, tmp_path):
    files = user_files(tmp_path / "work")
    proc = subprocess.run([sys.executable, "-m", "ovdet.cli.main", "export-ckpt", str(checkpoint), "."],
                          cwd=tmp_path / "work", capture_output=True, text=True, env=ENV, timeout=300)  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "current folder" in proc.stderr
    assert still_there(tmp_path / "work", files)


def test_save_replaces_its_own_model_but_never_a_file_it_did_not_write(detector, tmp_path):
    target = tmp_path / "model"
    detector.save_pretrained(target)
    detector.save_pretrained(target)  # replacing an ovdet folder ovdet wrote is fine
    assert isinstance(Detector.from_pretrained(target), Detector)
    (target / "clip" / "notes.txt").write_text("mine")
    before = sorted(p.relative_to(target).as_posix() for p in target.rglob("*"))
    with pytest.raises(OvdetError, match=r"also holds files ovdet did not write \(\['clip/notes.txt'\]"):
        detector.save_pretrained(target)
    assert sorted(p.relative_to(target).as_posix() for p in target.rglob("*")) == before
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(OvdetError, match="is a file, not a folder"):
        detector.save_pretrained(tmp_path / "a_file")
    (tmp_path / "empty").mkdir()
    assert Detector.from_pretrained(detector.save_pretrained(tmp_path / "empty")) is not None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "empty", "model"]  # no temp folder left


@pytest.mark.parametrize("name", ["../../../../etc/hostname", "/proc/kcore", "clip/../../outside.safetensors"])
def test_checksum_names_outside_the_folder_are_refused_unread(model, name):
    config = json.loads((model / "config.json").read_text())
    config["checksums"][name] = "0" * 64
    (model / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelNotAvailableError, match="plain relative names inside it"):
        Detector.from_pretrained(model)


def test_a_link_leading_out_of_the_folder_is_refused(model, tmp_path):
    outside = tmp_path / "elsewhere.safetensors"
    shutil.move(model / "model.safetensors", outside)
    (model / "model.safetensors").symlink_to(outside)  # same bytes, same checksum: only the link is wrong
    with pytest.raises(ModelNotAvailableError, match="is a link that leads outside the model folder"):
        Detector.from_pretrained(model)


@pytest.mark.parametrize("checksums", [{}, None])
def test_empty_or_missing_checksums_do_not_turn_verification_off(model, checksums):
    config = json.loads((model / "config.json").read_text())
    config.pop("checksums") if checksums is None else config.update(checksums=checksums)
    (model / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelNotAvailableError, match=r"records no checksum for \[.*'model.safetensors'"):
        Detector.from_pretrained(model)
    record_checksums(model)  # the documented way to vouch for a folder one trusts
    assert isinstance(Detector.from_pretrained(model), Detector)


def test_an_unlisted_weights_file_is_refused(model):
    save_file({"x": torch.zeros(1)}, str(model / "clip" / "extra.safetensors"))
    with pytest.raises(ModelNotAvailableError, match=r"records no checksum for \['clip/extra.safetensors'\]"):
        Detector.from_pretrained(model)


def _pickled_clip(tiny_clip_dir, folder: Path, marker: Path) -> Path:
    folder.mkdir(parents=True)
    shutil.copy(tiny_clip_dir / "config.json", folder / "config.json")
    state = dict(CLIPModel.from_pretrained(str(tiny_clip_dir)).state_dict())
    torch.save({**state, "payload": Payload(marker)}, folder / "pytorch_model.bin")
    save_file({"decoy": torch.zeros(1)}, str(folder / "decoy.safetensors"))  # a safetensors file, wrongly named
    return folder


def test_a_decoy_safetensors_does_not_let_a_pickle_load(tiny_clip_dir, model, tmp_path):
    marker = tmp_path / MARKER
    with pytest.raises(ModelNotAvailableError, match="pickle files.*another \\*.safetensors file"):
        Detector.from_pretrained(_pickled_clip(tiny_clip_dir, tmp_path / "clip", marker))
    shutil.rmtree(model / "clip")
    _pickled_clip(tiny_clip_dir, model / "clip", marker)  # inside an ovdet folder, with checksums recorded
    record_checksums(model)
    with pytest.raises(ModelNotAvailableError, match="pickle files"):
        Detector.from_pretrained(model)
    assert not marker.exists()


@pytest.mark.parametrize("shard", ["../x.safetensors", "/tmp/x.safetensors"])
def test_a_shard_index_naming_files_outside_the_folder_is_refused(tiny_clip_dir, tmp_path, shard):
    folder = tmp_path / "clip"
    shutil.copytree(tiny_clip_dir, folder)
    shutil.move(folder / "model.safetensors", tmp_path / "x.safetensors")
    weights = CLIPModel.from_pretrained(str(tiny_clip_dir)).state_dict()
    index = {"metadata": {}, "weight_map": {k: shard for k in weights}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(ModelNotAvailableError, match="model.safetensors.index.json' names the file"):
        Detector.from_pretrained(folder)


def test_a_folder_that_changes_while_writing_keeps_the_new_model_beside_it(tmp_path):
    from ovdet.models.model_folder import atomic_folder, check_model_target

    target = tmp_path / "model"
    check_model_target(target)  # new: fine (what ovdet train checks before training, not after)
    with pytest.raises(OvdetError, match=r"is not empty .*; what was written is kept in '.*model-new-"):
        with atomic_folder(target) as tmp:
            (tmp / "config.json").write_text("{}")
            files = user_files(target)  # someone puts files there while the model is written
    assert still_there(target, files)
    assert [(p / "config.json").read_text() for p in tmp_path.glob("model-new-*")] == ["{}"]
    with pytest.raises(OvdetError, match="is not empty and is not an ovdet model folder"):
        check_model_target(target)
