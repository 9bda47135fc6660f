"""`ovdet label`'s options and outputs checked before any model loads: one line each, exit 2."""

from pathlib import Path

import pytest

from ovdet.cli.main import main
from ovdet.errors import OvdetError
from ovdet.labelling.label_set import check_unique_stems, images_root, keep_detections
from ovdet.labelling.query_thresholds import LabelQuery, parse_label_queries, parse_label_query, resolve_thresholds
from ovdet.models.detection import Detection

SCENE = Path(__file__).resolve().parents[1] / "ovdet" / "assets" / "scene.png"
NO_MODEL = "/nonexistent/model"  # were the model loaded, the error would name it instead


@pytest.mark.parametrize("value, expected", [
    ("car", LabelQuery("car", None)),
    ("car:0.3", LabelQuery("car", 0.3)),
    (" red umbrella :1", LabelQuery("red umbrella", 1.0)),
    ("sign: stop:0", LabelQuery("sign: stop", 0.0)),
])
def test_a_query_may_carry_its_own_threshold(value, expected):
    assert parse_label_query(value) == expected


@pytest.mark.parametrize("value", ["car:abc", "car:1.5", "car:-0.1", "car:nan", ":0.3", "car:"])
def test_a_bad_query_threshold_is_refused(value):
    with pytest.raises(OvdetError, match="must be a score threshold in \\[0, 1\\]"):
        parse_label_query(value)


def test_query_texts_are_checked_as_detect_checks_them():
    with pytest.raises(ValueError, match="given twice"):
        parse_label_queries(["car", "car:0.3"])
    with pytest.raises(ValueError, match="query list is empty"):
        parse_label_queries([])


def test_a_plain_query_takes_the_default_threshold():
    queries = parse_label_queries(["car:0.7", "truck"])
    assert resolve_thresholds(queries, 0.25) == [0.7, 0.25]


def detection(label: int, score: float, box=(0.0, 0.0, 10.0, 10.0)) -> Detection:
    return Detection(list(box), score, label, f"q{label}")


def test_each_query_keeps_its_boxes_at_its_own_threshold():
    dets = [detection(0, 0.9), detection(0, 0.5), detection(1, 0.5), detection(1, 0.2)]
    kept = keep_detections(dets, thresholds=[0.6, 0.2], floor=0.2)
    assert [(d.label, d.score) for d in kept] == [(0, 0.9), (1, 0.5), (1, 0.2)]


def test_a_query_at_the_floor_keeps_every_box_detect_returned():
    """detect ran at the floor: a box it kept is never dropped again for its rounded score."""
    assert keep_detections([detection(0, 0.3)], thresholds=[0.300049], floor=0.300049) == [detection(0, 0.3)]


def test_min_box_drops_boxes_narrower_or_shorter_than_it():
    dets = [detection(0, 0.9, (0, 0, 8, 20)), detection(0, 0.9, (0, 0, 20, 7.9)), detection(0, 0.9, (5, 5, 13, 13))]
    kept = keep_detections(dets, thresholds=[0.1], floor=0.1, min_box=8)
    assert [d.box for d in kept] == [[0, 0, 8, 20], [5, 5, 13, 13]]


def test_file_names_are_relative_to_the_images_common_folder(tmp_path):
    root, names = images_root([str(tmp_path / "a" / "x.png"), str(tmp_path / "b" / "c" / "y.jpg")])
    assert root == tmp_path and names == ["a/x.png", "b/c/y.jpg"]
    with pytest.raises(OvdetError, match="share the name 'x'"):
        check_unique_stems(["a/x.png", "b/x.jpg"])


def one_error_line(capsys) -> str:
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("ovdet label: error: "), lines
    return lines[0]


@pytest.mark.parametrize("args, message", [
    (["-q", "car:abc"], "-q 'car:abc': the part after the last ':' must be a score threshold in [0, 1]"),
    (["-q", "car:2"], "must be a score threshold in [0, 1]"),
    (["-q", "car", "--threshold", "1.5"], "--threshold must be a number in [0, 1]"),
    (["-q", "car", "--threshold", "-0.1"], "--threshold must be a number in [0, 1]"),
    (["-q", "car", "--format", "xml"], "--format 'xml' is not a format ovdet label writes; use one of coco, yolo"),
    (["-q", "car", "--agnostic-nms", "0"], "--agnostic-nms must be an IoU in (0, 1]"),
    (["-q", "car", "--min-box", "-1"], "--min-box must be a number of pixels >= 0"),
    (["-q", "car", "--min-box", "nan"], "--min-box must be a number of pixels >= 0"),
])
def test_bad_options_are_one_line_before_the_model_loads(args, message, tmp_path, capsys):
    assert main(["label", str(SCENE), *args, "--model", NO_MODEL, "--out", str(tmp_path / "out")]) == 2
    assert message in one_error_line(capsys)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("fmt, foreign", [
    ("coco", "instances.json"), ("yolo", "data.yaml"), ("yolo", "labels/scene.txt"),
    ("voc", "Annotations/scene.xml"), ("label-studio", "tasks.json"), ("label-studio", "label_config.xml"),
])
def test_a_file_ovdet_did_not_write_is_refused_before_the_model_loads(fmt, foreign, tmp_path, capsys):
    target = tmp_path / "out" / foreign
    target.parent.mkdir(parents=True)
    target.write_text("mine\n")
    assert main(["label", str(SCENE), "-q", "star", "--format", fmt, "--model", NO_MODEL,
                 "--out", str(tmp_path / "out")]) == 2
    line = one_error_line(capsys)
    assert f"'{target}' ({fmt}) exists and was not written by ovdet" in line and "--overwrite" in line
    assert target.read_text() == "mine\n"
    # with --overwrite the check passes, and the run goes on to load the model (which does not exist here)
    assert main(["label", str(SCENE), "-q", "star", "--format", fmt, "--model", NO_MODEL,
                 "--out", str(tmp_path / "out"), "--overwrite"]) == 2
    assert NO_MODEL in one_error_line(capsys)


def test_an_out_that_is_a_file_is_refused(tmp_path, capsys):
    (tmp_path / "out").write_text("x")
    assert main(["label", str(SCENE), "-q", "star", "--model", NO_MODEL, "--out", str(tmp_path / "out")]) == 2
    assert f"--out '{tmp_path / 'out'}' is a file; name a folder" in one_error_line(capsys)


def test_images_sharing_a_name_are_refused_for_yolo_and_voc(tmp_path, capsys):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "x.png").write_bytes(SCENE.read_bytes())
    images = [str(tmp_path / "a" / "x.png"), str(tmp_path / "b" / "x.png")]
    assert main(["label", *images, "-q", "star", "--format", "voc", "--model", NO_MODEL,
                 "--out", str(tmp_path / "out")]) == 2
    assert "share the name 'x'" in one_error_line(capsys)


def test_help_explains_every_option_with_examples(capsys):
    with pytest.raises(SystemExit):
        main(["label", "--help"])
    text = capsys.readouterr().out
    for option in ("--format", "--threshold", "--agnostic-nms", "--min-box", "--overwrite", "--image-url-prefix",
                   "NAME[:THRESHOLD]", "Examples:", "label-studio", "experiment=finetune_labels"):
        assert option in text, option


def test_the_summary_gives_each_class_its_count_and_score_spread(capsys):
    from ovdet.labelling.label_set import LabelledImage, LabelSet
    from ovdet.labelling.summary import class_summary, print_summary

    images = [LabelledImage("a.png", "a.png", 10, 10, [detection(0, 0.9), detection(0, 0.5), detection(1, 0.4)]),
              LabelledImage("b.png", "b.png", 10, 10, [detection(0, 0.7)]),
              LabelledImage("c.png", "c.png", 10, 10, [])]
    labels = LabelSet(["car", "truck", "bus"], Path("."), images, "m")
    assert class_summary(labels) == [
        {"name": "car", "count": 3, "images": 2, "min": 0.5, "median": 0.7, "max": 0.9},
        {"name": "truck", "count": 1, "images": 1, "min": 0.4, "median": 0.4, "max": 0.4},
        {"name": "bus", "count": 0, "images": 0, "min": None, "median": None, "max": None},
    ]
    print_summary(labels)
    text = capsys.readouterr().out
    assert "3 images labelled, 1 without any box" in text
    assert [line.split() for line in text.splitlines() if "car" in line or "bus" in line] == [
        ["│", "car", "│", "3", "│", "2", "│", "0.500", "│", "0.700", "│", "0.900", "│"],
        ["│", "bus", "│", "0", "│", "0", "│", "-", "│", "-", "│", "-", "│"]]
