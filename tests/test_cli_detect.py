"""`ovdet detect` end to end, run as a user would: a subprocess with the installed console script."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ovdet.models.detector import Detector

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def ovdet(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ovdet.cli.main", *args], capture_output=True, text=True, env=ENV, timeout=300)


@pytest.fixture(scope="module")
def model_dir(tiny_clip_dir, tmp_path_factory):
    return Detector.from_clip(str(tiny_clip_dir), image_size=64).save_pretrained(tmp_path_factory.mktemp("m") / "det")


@pytest.fixture(scope="module")
def generated_image(tmp_path_factory):
    path = tmp_path_factory.mktemp("img") / "generated.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (60, 100, 3), dtype=np.uint8)).save(path)
    return path


def check_schema(records, paths):
    assert [r["path"] for r in records] == [str(p) for p in paths]
    for rec in records:
        assert set(rec) >= {"path", "width", "height", "detections"}
        for det in rec["detections"]:
            assert set(det) >= {"box", "score", "query"}
            x0, y0, x1, y1 = det["box"]
            assert 0 <= x0 <= x1 <= rec["width"] and 0 <= y0 <= y1 <= rec["height"]
            assert 0 <= det["score"] <= 1


def test_detect_generated_image_writes_json_and_png(model_dir, generated_image, tmp_path):
    out = tmp_path / "res.json"
    proc = ovdet("detect", str(generated_image), "-q", "star", "-q", "red circle", "--model", str(model_dir),
                 "--threshold", "0", "--out", str(out), "--draw", str(tmp_path / "draw"))
    assert proc.returncode == 0, proc.stderr
    records = json.loads(out.read_text())
    check_schema(records, [generated_image])
    assert records[0]["width"] == 100 and records[0]["height"] == 60
    assert records[0]["detections"] and {d["query"] for d in records[0]["detections"]} <= {"star", "red circle"}
    assert "UNTRAINED" in proc.stderr  # a random head is labelled as plumbing, not detections
    assert Image.open(tmp_path / "draw" / "generated.png").size == (100, 60)
    assert "star" in proc.stdout


def test_detect_real_photo(model_dir, coco128, tmp_path):
    photos = sorted((coco128 / "images").glob("*.jpg"))[:2]
    out = tmp_path / "res.json"
    proc = ovdet("detect", *map(str, photos), "-q", "person", "--model", str(model_dir), "--threshold", "0", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    records = json.loads(out.read_text())
    check_schema(records, photos)
    assert (records[0]["width"], records[0]["height"]) == Image.open(photos[0]).size


@pytest.mark.parametrize(
    "args, message",
    [
        (["missing.jpg", "-q", "x"], "does not exist"),
        (["{img}"], "query list is empty"),
        (["{img}", "-q", "x", "--model", "openai/clip-vit-base-patch32"], "not available offline"),
        (["{empty}", "-q", "x"], "0 bytes"),
    ],
)
def test_errors_are_one_line_without_traceback(args, message, model_dir, generated_image, tmp_path):
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    args = [a.format(img=generated_image, empty=empty) for a in args]
    if "--model" not in args:
        args += ["--model", str(model_dir)]
    proc = ovdet("detect", *args)
    assert proc.returncode != 0
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert len([line for line in proc.stderr.splitlines() if "error" in line]) == 1


def test_help_explains_every_option():
    proc = ovdet("detect", "--help")
    assert proc.returncode == 0
    for option in ("--query", "--model", "--threshold", "--out", "--draw", "--templates", "--nms"):
        assert option in proc.stdout
    top = ovdet("--help")
    assert top.returncode == 0 and "detect" in top.stdout


def test_drawings_of_images_with_the_same_name_do_not_overwrite(tmp_path):
    from ovdet.cli.detect import drawing_names, write_drawing

    names = drawing_names(tmp_path / "out", ["a/x.jpg", "b/x.png"])
    for name in names:
        write_drawing(name, Image.new("RGB", (8, 8)), (8, 8), [], None)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["x.png", "x_1.png"]


def test_drawing_into_the_input_folder_never_overwrites_a_photo(tmp_path):
    from ovdet.cli.detect import drawing_names

    photo = tmp_path / "photo.png"
    Image.new("RGB", (8, 8)).save(photo)
    assert drawing_names(tmp_path, [str(photo)]) == [tmp_path / "photo_0.png"]
