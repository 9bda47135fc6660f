"""Broken, altered or unsafe model files: one clear error naming the file, and no code ever run from them."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from test_training import compose_train
from transformers import CLIPModel

from ovdet.errors import CheckpointError, ModelNotAvailableError
from ovdet.models.detector import Detector
from ovdet.models.model_folder import config_checksum, record_checksums
from ovdet.training.checkpoint import load_checkpoint
from ovdet.training.export import export_from_checkpoint
from ovdet.training.run import train

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
from pickle_payload import MARKER, Payload  # noqa: E402  (tests/ is on sys.path: conftest)


@pytest.fixture(scope="module")
def saved(tiny_clip_dir, tmp_path_factory):
    return Detector.from_clip(str(tiny_clip_dir), image_size=32).save_pretrained(tmp_path_factory.mktemp("m") / "det")


@pytest.fixture()
def model(saved, tmp_path):
    """A fresh copy of a saved detector folder, to break."""
    return Path(shutil.copytree(saved, tmp_path / "det"))


def edit_config(folder: Path, **changes) -> None:
    """Change config.json and re-record its own checksum (as a user who trusts the edit would), so that the
    checks of the values themselves are reached."""
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    if isinstance(config.get("checksums"), dict):
        config["checksums"]["config.json"] = config_checksum(config)
    (folder / "config.json").write_text(json.dumps(config))


def vouch(folder: Path) -> None:
    """Re-record the checksums of a broken folder, as a user who trusts it would: the files themselves
    must then be checked."""
    record_checksums(folder)


def test_saved_folder_records_checksums_and_loads(model):
    config = json.loads((model / "config.json").read_text())
    assert "model.safetensors" in config["checksums"] and any(k.startswith("clip/") for k in config["checksums"])
    assert isinstance(Detector.from_pretrained(model), Detector)


def test_truncated_weights_are_named(model):
    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(ModelNotAvailableError, match="does not match the checksum"):
        Detector.from_pretrained(model)
    vouch(model)
    with pytest.raises(ModelNotAvailableError, match="not a readable safetensors file.*truncated or corrupt"):
        Detector.from_pretrained(model)


def test_tampered_weights_are_named(model):
    weights = model / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0xFF  # one weight changed, the file still parses
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelNotAvailableError, match=r"model\.safetensors' does not match the checksum"):
        Detector.from_pretrained(model)
    clip_file = next((model / "clip").glob("*.safetensors"))
    clip_file.write_bytes(b"\x00" * 8 + clip_file.read_bytes()[8:])  # header length zeroed
    vouch(model)
    with pytest.raises(ModelNotAvailableError):
        Detector.from_pretrained(model)


def test_wrong_shape_head_and_nan_weights_are_named(model):
    weights = model / "model.safetensors"
    state = load_file(str(weights))
    name = "head.class_proj.weight"
    good = state[name]
    state[name] = torch.zeros(good.shape[0] + 3, good.shape[1])
    save_file(state, str(weights))
    vouch(model)
    shape = rf"\[{good.shape[0] + 3}, {good.shape[1]}\]"
    with pytest.raises(ModelNotAvailableError, match=rf"'{name}' is {shape} in the file"):
        Detector.from_pretrained(model)
    state[name] = torch.full_like(good, float("nan"))
    save_file(state, str(weights))
    vouch(model)
    with pytest.raises(ModelNotAvailableError, match="NaN or infinite"):
        Detector.from_pretrained(model)
    del state[name]
    save_file(state, str(weights))
    vouch(model)
    with pytest.raises(ModelNotAvailableError, match="missing"):
        Detector.from_pretrained(model)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"image_sise": 32}, r"unknown key\(s\) \['image_sise'\]"),
        ({"image_size": "32"}, "image_size must be int"),
        ({"box_layers": True}, "box_layers must be int"),
        ({"rescore": {"topkk": 3}}, r"rescore has unknown key\(s\) \['topkk'\]"),
        ({"format_version": 99}, "upgrade ovdet"),
        ({"clip": {"format": "hf"}}, "clip must be .*'path'"),
        ({"image_size": 30}, "describes no valid model.*multiple"),
        ({"templates": "clip77"}, "describes no valid model.*unknown template set 'clip77'"),
        ({"context_blocks": -1}, r"context_blocks must be in 0\.\.8, got -1"),
        ({"clip": {"format": "clipp", "path": "clip"}}, r"clip.format 'clipp' is not a format ovdet knows; known: \('hf'"),
        ({"templates": ["a {}."] * 10_000}, "templates lists 10000 templates, over the cap of 100"),
        ({"rescore": {"reference": [f"n{i}" for i in range(10_000)]}},
         "rescore.reference lists 10000 names, over the cap of 256"),
    ],
)
def test_bad_config_is_named(model, changes, message):
    edit_config(model, **changes)
    with pytest.raises(ModelNotAvailableError, match=message):
        Detector.from_pretrained(model)


def test_missing_or_unreadable_config(model):
    (model / "config.json").write_text("{not json")
    with pytest.raises(ModelNotAvailableError, match="not valid JSON"):
        Detector.from_pretrained(model)
    (model / "config.json").unlink()
    with pytest.raises(ModelNotAvailableError, match="no config.json"):
        Detector.from_pretrained(model)


def test_weights_only_in_pickles_are_refused_unopened(tiny_clip_dir, tmp_path):
    folder = tmp_path / "pickled_clip"
    folder.mkdir()
    shutil.copy(tiny_clip_dir / "config.json", folder / "config.json")
    marker = tmp_path / MARKER
    state = dict(CLIPModel.from_pretrained(str(tiny_clip_dir)).state_dict())
    torch.save({**state, "payload": Payload(marker)}, folder / "pytorch_model.bin")
    with pytest.raises(ModelNotAvailableError, match="pickle files.*safetensors only"):
        Detector.from_pretrained(folder)
    assert not marker.exists()


def _evil_checkpoint(path: Path, marker: Path) -> Path:
    torch.save({"state_dict": {}, "ovdet_detector": {}, "global_step": 1, "payload": Payload(marker)}, path)
    return path


def test_checkpoint_with_pickled_code_is_refused(tmp_path):
    marker = tmp_path / MARKER
    ckpt = _evil_checkpoint(tmp_path / "evil.ckpt", marker)
    with pytest.raises(CheckpointError, match="pickled objects"):
        export_from_checkpoint(ckpt, tmp_path / "out")
    (tmp_path / "short.ckpt").write_bytes(ckpt.read_bytes()[:50])
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(tmp_path / "short.ckpt")
    assert not marker.exists()


def test_resume_from_a_checkpoint_with_pickled_code_is_refused(tiny_clip_dir, tmp_path):
    from synthetic_coco import write_synthetic_coco

    marker = tmp_path / MARKER
    ckpt = _evil_checkpoint(tmp_path / "evil.ckpt", marker)
    json_path = write_synthetic_coco(tmp_path / "data", num_images=4, seed=0)
    cfg = compose_train(tiny_clip_dir, tmp_path / "out", (json_path, tmp_path / "data" / "images"), "logger=none",
                        f"ckpt_path={ckpt}")
    with pytest.raises(CheckpointError, match="pickled objects"):
        train(cfg)
    assert not marker.exists()


def test_cli_names_a_tampered_model_in_one_line(model, tmp_path):
    from PIL import Image

    Image.new("RGB", (16, 16)).save(tmp_path / "img.png")
    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])
    proc = subprocess.run([sys.executable, "-m", "ovdet.cli.main", "detect", str(tmp_path / "img.png"), "-q", "x",
                           "--model", str(model)], capture_output=True, text=True, env=ENV, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if "error" in line]
    assert len(lines) == 1 and str(weights) in lines[0]


def test_config_json_is_covered_by_its_own_checksum(model):
    config = json.loads((model / "config.json").read_text())
    assert "config.json" in config["checksums"]
    (model / "config.json").write_text(json.dumps({**config, "threshold": 0.9}))  # a valid value, changed by hand
    with pytest.raises(ModelNotAvailableError, match=r"config.json' does not match the checksum it recorded for its own"):
        Detector.from_pretrained(model)
    vouch(model)  # the documented way to accept an edit one trusts
    assert Detector.from_pretrained(model).settings.threshold == 0.9


def test_a_folder_saved_before_config_checksums_still_loads(model):
    config = json.loads((model / "config.json").read_text())
    del config["checksums"]["config.json"]
    (model / "config.json").write_text(json.dumps(config))
    assert isinstance(Detector.from_pretrained(model), Detector)


@pytest.mark.parametrize("vocab_json", [False, True])
def test_a_clip_folder_without_tokenizer_files_is_named(tmp_path, vocab_json):
    """Its text tower has 1000 tokens: OpenAI's 49408-token BPE in their place ended in an IndexError."""
    from tiny_clip import tiny_clip_config

    config = tiny_clip_config()
    config.text_config.vocab_size = 1000
    folder = tmp_path / "clip"
    CLIPModel(config).save_pretrained(str(folder))
    if vocab_json:
        (folder / "vocab.json").write_text("{}")
    lacking = "no merges.txt" if vocab_json else r"no tokenizer \(tokenizer.json or vocab.json \+ merges.txt missing\)"
    with pytest.raises(ModelNotAvailableError, match=rf"model folder '{re.escape(str(folder))}' has (vocab.json but )?{lacking}"):
        Detector.from_clip(str(folder), image_size=32)


@pytest.fixture()
def latin1_folder(tmp_path):
    """A folder whose name is not UTF-8 (Latin-1 'café'), as Python holds it (a surrogate escape)."""
    name = os.fsdecode(os.fsencode(tmp_path) + b"/caf\xe9")
    try:
        os.mkdir(name)
    except (OSError, UnicodeError):
        pytest.skip("this file system keeps only UTF-8 names")
    return Path(name)


def test_a_model_in_a_non_utf8_folder_loads(tiny_clip_dir, latin1_folder):
    clip = Path(shutil.copytree(tiny_clip_dir, latin1_folder / "clip"))
    det = Detector.from_clip(str(clip), image_size=32)
    saved = det.save_pretrained(latin1_folder / "det")
    again = Detector.from_pretrained(saved)
    pixels = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(det.predict(pixels, ["x"])["logits"], again.predict(pixels, ["x"])["logits"], atol=1e-5)


def test_an_open_clip_model_in_a_non_utf8_folder_loads(latin1_folder):
    from test_open_clip_tower import tiny_resnet_clip

    from ovdet.towers.loader import load_clip
    from ovdet.towers.open_clip_io import save_open_clip

    save_open_clip(tiny_resnet_clip(), latin1_folder / "rn")
    assert load_clip(latin1_folder / "rn").format == "open_clip"
