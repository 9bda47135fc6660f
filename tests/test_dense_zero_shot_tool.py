"""tools/dense_zero_shot.py end to end on a tiny ResNet CLIP and a few ShapeWorld scenes."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from ovdet.file_mark import MARK_KEY, is_mark

TOOL = Path(__file__).resolve().parents[1] / "tools" / "dense_zero_shot.py"
SIZE = 64  # the tiny tower's training resolution
MEASURES = ("centre_cell", "box_pooled", "crop", "square_crop")


@pytest.fixture(scope="module")
def tool():
    spec = importlib.util.spec_from_file_location("dense_zero_shot", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    from test_open_clip_tower import tiny_resnet_clip

    from ovdet.towers.open_clip_io import save_open_clip

    model = tiny_resnet_clip()
    model.train()  # BatchNorm statistics from real inputs, so the embeddings differ between boxes
    with torch.no_grad():
        model.encode_image(torch.randn(8, 3, SIZE, SIZE))
    return save_open_clip(model.eval(), tmp_path_factory.mktemp("rn") / "clip")


def _run(tool, tiny_clip, *args) -> int:
    return tool.main(["--clip", str(tiny_clip), "--image-size", str(SIZE), "--no-progress", *map(str, args)])


def test_scenes_and_their_coco_set_give_the_same_marked_numbers(tool, tiny_clip, tmp_path, one_thread, capsys):
    from ovdet.data.shapeworld_dataset import write_dataset

    out = tmp_path / "scenes.json"
    assert _run(tool, tiny_clip, "--scenes", 4, "--seed", 7, "--out", out) == 0
    result = json.loads(out.read_text())
    assert is_mark(result[MARK_KEY])
    assert result["source"] == {"scenes": 4, "seed": 7} and len(result["names"]) == 16
    assert result["boxes"]["all"] == result["boxes"]["base"] + result["boxes"]["novel"] > 0
    for m in MEASURES:
        assert set(result[m]) == {"base", "novel", "all"}
        assert all(v is None or 0.0 <= v <= 1.0 for v in result[m].values()), (m, result[m])
        assert result[m]["all"] is not None
    assert -1.0 <= result["pooled_crop_cosine"] <= 1.0
    assert "box_pooled" in capsys.readouterr().out  # the printed table

    # The same scenes written as a COCO set (PNG is lossless): same boxes, same numbers, so the xywh
    # annotations and the in-memory scenes map to the same input-pixel boxes.
    data = tmp_path / "set"
    write_dataset(data, num_images=4, seed=7, progress=False)
    coco_out = tmp_path / "coco.json"
    assert _run(tool, tiny_clip, "--annotations", data / "instances.json", "--out", coco_out) == 0
    coco = json.loads(coco_out.read_text())
    assert coco["boxes"] == result["boxes"]
    for m in MEASURES:
        assert coco[m] == pytest.approx(result[m], abs=1e-6)
    assert coco["pooled_crop_cosine"] == pytest.approx(result["pooled_crop_cosine"], abs=1e-5)

    # Its own marked file is replaced without --overwrite.
    assert _run(tool, tiny_clip, "--scenes", 1, "--seed", 7, "--out", out) == 0
    assert json.loads(out.read_text())["source"]["scenes"] == 1


def test_foreign_out_is_refused_in_one_line_before_the_clip_loads(tool, tmp_path, capsys):
    out = tmp_path / "mine.json"
    out.write_text('{"a": 1}')
    # The CLIP folder does not exist: the refusal must come first, before any slow work.
    code = tool.main(["--clip", str(tmp_path / "no_clip"), "--scenes", "2", "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert str(out) in err and "--overwrite" in err and "no_clip" not in err
    assert out.read_text() == '{"a": 1}'


def test_foreign_out_is_replaced_with_overwrite(tool, tiny_clip, tmp_path, one_thread):
    out = tmp_path / "mine.json"
    out.write_text('{"a": 1}')
    assert _run(tool, tiny_clip, "--scenes", 1, "--seed", 3, "--out", out, "--overwrite") == 0
    assert is_mark(json.loads(out.read_text())[MARK_KEY])
