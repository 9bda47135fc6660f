"""`ovdet detect` as a new user meets it (issue K): folders, defaults, bad options and configs, never a traceback."""

import json
import shutil

import pytest
from PIL import Image

from ovdet.cli.main import main


@pytest.fixture(scope="module")
def model_dir(perturbed_detector, tmp_path_factory):
    return perturbed_detector.save_pretrained(tmp_path_factory.mktemp("m") / "model")


def _error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    return err[0]


def test_a_folder_of_images_is_detected_and_empty_results_say_so(model_dir, tmp_path, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("b.png", "a.jpg"):
        Image.new("RGB", (40, 30)).save(folder / name)
    (folder / "notes.txt").write_text("not an image")
    out = tmp_path / "r.json"
    assert main(["detect", str(folder), "-q", "cat", "--model", str(model_dir), "--threshold", "1", "--out", str(out)]) == 0
    assert [r["path"] for r in json.loads(out.read_text())] == [str(folder / "a.jpg"), str(folder / "b.png")]
    assert "no detections" in capsys.readouterr().out


def test_quiet_prints_no_table_and_pipeline_records_carry_the_text(model_dir, tmp_path, capsys):
    image = tmp_path / "x.png"
    Image.new("RGB", (40, 30), (200, 30, 30)).save(image)
    out = tmp_path / "r.json"
    assert main(["detect", str(image), "-q", "cat", "--model", str(model_dir), "--threshold", "0", "--quiet",
                 "--out", str(out), "--out-format", "pipeline", "--agnostic-nms"]) == 0
    assert "┃" not in capsys.readouterr().out
    records = json.loads(out.read_text())[0]
    assert records and records[0]["label"] == "cat" and set(records[0]["box"]) == {"xmin", "ymin", "xmax", "ymax"}


def test_rich_markup_and_escape_sequences_in_paths_are_printed_plainly(model_dir, tmp_path, capsys):
    folder = tmp_path / "img" / "["
    folder.mkdir(parents=True)
    image = folder / "red]\x1b[31m.png"  # the path reads img/[/red]...: rich markup that closed a tag
    Image.new("RGB", (40, 30)).save(image)
    assert main(["detect", str(image), "-q", "[bold]cat", "--model", str(model_dir), "--threshold", "0"]) == 0
    out = capsys.readouterr().out
    assert "[/red]" in out and "\x1b[31m" not in out and "\\x1b" in out


@pytest.mark.parametrize("device, message", [("tpu", "not a device"), ("cuda:7", "cuda")])
def test_devices_this_machine_lacks_are_one_line(model_dir, tmp_path, capsys, device, message):
    import torch

    if device.startswith("cuda") and torch.cuda.device_count() > 7:
        pytest.skip("this machine has 8 GPUs")
    image = tmp_path / "x.png"
    Image.new("RGB", (8, 8)).save(image)
    assert main(["detect", str(image), "-q", "cat", "--model", str(model_dir), "--device", device]) == 2
    assert message in _error(capsys)


@pytest.mark.parametrize("option, message", [(["--threshold", "60"], "--threshold"), (["--nms", "0"], "--nms"),
                                             (["--draw", "FILE"], "--draw"), (["--out", "IMAGE"], "--out")])
def test_bad_options_fail_before_the_model_loads(tmp_path, capsys, option, message):
    image = tmp_path / "x.png"
    Image.new("RGB", (8, 8)).save(image)
    (tmp_path / "file.txt").write_text("x")
    args = [a.replace("FILE", str(tmp_path / "file.txt")).replace("IMAGE", str(image)) for a in option]
    # a model path that does not exist: the option check must come first
    assert main(["detect", str(image), "-q", "cat", "--model", str(tmp_path / "nope"), *args]) == 2
    assert message in _error(capsys)


@pytest.mark.parametrize("key, value", [
    ("box_layers", -1), ("box_layers", 10**9), ("context_blocks", 10**6), ("image_size", 10**7),
    ("rescore", {"topk": "many"}), ("rescore", {"reference": 3}), ("rescore", {"bogus": 1}),
    ("templates", [1, 2]), ("templates", {"a": 1}), ("threshold", 3.0), ("info", {"a": {"b": {"c": {"d": {"e": {"f": {}}}}}}}),
])
def test_bad_config_values_are_refused_before_anything_is_built(model_dir, tmp_path, capsys, key, value):
    bad = tmp_path / "bad"
    shutil.copytree(model_dir, bad)
    config = json.loads((bad / "config.json").read_text())
    (bad / "config.json").write_text(json.dumps({**config, key: value}))
    image = tmp_path / "x.png"
    Image.new("RGB", (8, 8)).save(image)
    assert main(["detect", str(image), "-q", "cat", "--model", str(bad)]) == 2
    assert key in _error(capsys) or "nested" in capsys.readouterr().err


def test_any_exception_is_one_line_without_escape_sequences(monkeypatch, tmp_path, capsys):
    """L6: not only ValueError/OSError: every exception type reaches the user as one plain line."""
    from ovdet.cli import detect

    def boom(args):
        raise RuntimeError("kaput\x1b[2J\nsecond line")

    monkeypatch.setattr(detect, "run", boom)
    image = tmp_path / "x.png"
    Image.new("RGB", (8, 8)).save(image)
    assert main(["detect", str(image), "-q", "cat"]) == 2
    line = _error(capsys)
    assert "RuntimeError: kaput" in line and "\x1b" not in line and "OVDET_TRACEBACK" in line


def test_help_of_every_command_shows_real_defaults():
    from ovdet.cli.main import build_parser

    sub = build_parser()._subparsers._group_actions[0].choices
    for name, parser in sub.items():
        assert "(default: None)" not in parser.format_help(), name


def test_a_bad_tokenizer_file_in_clip_is_one_line(perturbed_detector, tmp_path, capsys):
    """Even with checksums re-recorded (a folder the user vouches for), a broken vocab.json is refused plainly."""
    from ovdet.models.model_folder import record_checksums

    folder = perturbed_detector.save_pretrained(tmp_path / "m")
    vocab = folder / "clip" / "tokenizer.json"
    assert vocab.is_file()
    vocab.write_text('{"not": "a tokenizer"')  # cut short
    record_checksums(folder)
    image = tmp_path / "x.png"
    Image.new("RGB", (8, 8)).save(image)
    assert main(["detect", str(image), "-q", "cat", "--model", str(folder)]) == 2
    line = _error(capsys)
    assert "tokenizer" in line or "clip" in line
