"""`ovdet detect` and `ovdet eval` check every input path and option value before a model is loaded
(seconds to load): the loader is made to fail loudly, and each bad input must be refused without reaching it."""

import json

import pytest
from PIL import Image

from ovdet.cli.main import main
from ovdet.models.detector import Detector


@pytest.fixture()
def no_model_load(monkeypatch):
    """Any model load is recorded and fails: a refusal that comes after it shows up in `calls`."""
    calls = []

    def refuse(*args, **kwargs):
        calls.append(args)
        raise RuntimeError("the model was loaded before the inputs were checked")

    monkeypatch.setattr(Detector, "from_pretrained", classmethod(lambda cls, *a, **k: refuse(*a, **k)))
    return calls


@pytest.fixture()
def files(tmp_path):
    image = tmp_path / "cat.jpg"
    Image.new("RGB", (16, 12)).save(image)
    (tmp_path / "user.json").write_text('{"mine": 1}')
    (tmp_path / "draw").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "draw" / "cat.png")  # the user's own PNG, not a drawing of ovdet's
    (tmp_path / "report").mkdir()
    (tmp_path / "report" / "report.md").write_text("# my notes\n")
    gt = {"images": [{"id": 1, "file_name": "cat.jpg", "width": 16, "height": 12}],
          "categories": [{"id": 1, "name": "cat"}], "annotations": []}  # fmt: skip
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    return tmp_path


def _one_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in lines[0], lines
    return lines[0]


@pytest.mark.parametrize("args, message", [
    (["{t}/missing.jpg"], "image '{t}/missing.jpg' does not exist"),
    (["https://example.com/cat.jpg"], "image 'https://example.com/cat.jpg' is a URL; ovdet reads only local files"),
    (["{t}/cat.jpg", "--batch-size", "0"], "--batch-size must be >= 1, got 0"),
    (["{t}/cat.jpg", "--nms", "nan"], "--nms must be an IoU in (0, 1]"),
    (["{t}/cat.jpg", "--nms", "5"], "--nms must be an IoU in (0, 1] (1 turns NMS off), e.g. 0.5, got 5.0"),
    (["{t}/cat.jpg", "--nms", "inf"], "--nms must be an IoU"),
    (["{t}/cat.jpg", "--threshold", "nan"], "--threshold must be a number in [0, 1]"),
    (["{t}/cat.jpg", "--max-detections", "0"], "--max-detections must be >= 1, got 0"),
    (["{t}/cat.jpg", "--out", "{t}/user.json"], "--out '{t}/user.json' exists and was not written by ovdet"),
    (["{t}/cat.jpg", "--draw", "{t}/draw"], "--draw '{t}/draw/cat.png' exists and was not written by ovdet"),
    (["{t}/cat.jpg", "--vocab-cache", "{t}/nope.safetensors"], "--vocab-cache '{t}/nope.safetensors' does not exist"),
    (["{t}/cat.jpg", "--templates", "{t}/nope.json"], "template file '{t}/nope.json' not found"),
    (["{t}/cat.jpg", "--templates", "bogus"], "unknown template set 'bogus'"),
    (["{t}/cat.jpg", "--exemplar", "{t}/nope.png:1,1,5,5"], "--exemplar image '{t}/nope.png' does not exist"),
    (["{t}/cat.jpg", "--exemplar", "https://example.com/x.png:1,1,5,5"], "is a URL"),
])  # fmt: skip
def test_detect_refuses_bad_inputs_before_the_model_loads(no_model_load, files, capsys, args, message):
    argv = ["detect", *(a.format(t=files) for a in args), "-q", "cat"]
    assert main(argv) == 2
    assert message.format(t=files) in _one_line(capsys)
    assert no_model_load == []


@pytest.mark.parametrize("args, message", [
    (["--annotations", "{t}/missing.json", "--images", "{t}"], "annotation file '{t}/missing.json' does not exist"),
    (["--annotations", "{t}/gt.json", "--images", "{t}/nope"], "--images '{t}/nope' does not exist"),
    (["--annotations", "{t}/gt.json", "--images", "{t}/cat.jpg"], "--images '{t}/cat.jpg' is a file"),
    (["--annotations", "https://example.com/gt.json", "--images", "{t}"], "is a URL; ovdet reads only local files"),
    (["--annotations", "{t}/gt.json", "--images", "{t}", "--batch-size", "0"], "--batch-size must be >= 1, got 0"),
    (["--annotations", "{t}/gt.json", "--images", "{t}", "--workers", "-1"], "--workers must be >= 0, got -1"),
    (["--annotations", "{t}/gt.json", "--images", "{t}", "--nms", "nan"], "--nms must be an IoU in (0, 1]"),
    (["--annotations", "{t}/gt.json", "--images", "{t}", "--nms", "5"], "--nms must be an IoU in (0, 1]"),
    (["--annotations", "{t}/gt.json", "--images", "{t}", "--threshold", "nan"], "--threshold must be a number in [0, 1]"),
    (["--annotations", "{t}/gt.json", "--images", "{t}", "--max-dets", "0"], "--max-dets must be >= 1, got 0"),
    (["--annotations", "{t}/gt.json", "--images", "{t}", "--out", "{t}/user.json"],
     "--out '{t}/user.json' exists and was not written by ovdet"),
    (["--annotations", "{t}/gt.json", "--images", "{t}", "--report", "{t}/report"],
     "--report '{t}/report/report.md' exists and was not written by ovdet"),
    (["--annotations", "{t}/gt.json", "--images", "{t}", "--templates", "bogus"], "unknown template set 'bogus'"),
    (["--images", "{t}", "--categories", "{t}/nope.json", "--predictions", "{t}/p.json"],
     "--categories '{t}/nope.json' does not exist"),
])  # fmt: skip
def test_eval_refuses_bad_inputs_before_the_model_loads(no_model_load, files, capsys, args, message):
    argv = ["eval", "--model", str(files / "model"), *(a.format(t=files) for a in args)]
    assert main(argv) == 2
    assert message.format(t=files) in _one_line(capsys)
    assert no_model_load == []
