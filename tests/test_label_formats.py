"""`ovdet label` with the embedded model on ShapeWorld images: every format round-trips through the
readers users load it with, and its boxes are `ovdet detect`'s."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.ops import box_iou

from ovdet import file_mark
from ovdet.cli.main import main
from ovdet.labelling.label_manifest import is_listed, listed_files
from ovdet.labelling.xml_mark import xml_is_ours

SCENE = Path(__file__).resolve().parents[1] / "ovdet" / "assets" / "scene.png"
QUERIES = ["circle", "square", "triangle", "red circle"]
SETTINGS = ["--threshold", "0.2", "--batch-size", "2"]
FORMATS = ["--format", "coco", "--format", "yolo", "--format", "voc", "--format", "label-studio"]


def label(images: Path, out: Path, *extra: str, queries=QUERIES) -> None:
    args = [str(images), *(a for q in queries for a in ("-q", q)), *SETTINGS, "--quiet", "--out", str(out)]
    assert main(["label", *args, *extra]) == 0


def detect(images: Path, out: Path, *extra: str) -> dict[str, list[dict]]:
    """`ovdet detect --out`'s detections per image file name."""
    args = [str(images), *(a for q in QUERIES for a in ("-q", q)), *SETTINGS, "--quiet", "--out", str(out)]
    assert main(["detect", *args, *extra]) == 0
    return {Path(r["path"]).name: r["detections"] for r in json.loads(out.read_text())}


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """Three ShapeWorld scenes of different sizes and the packaged scene (a red circle is a circle too)."""
    from ovdet.data.shapeworld_dataset import write_dataset

    folder = tmp_path_factory.mktemp("sw")
    write_dataset(folder, num_images=3, seed=3, progress=False)
    shutil.copy(SCENE, folder / "images" / "scene.png")
    return folder / "images"


@pytest.fixture(scope="module")
def labelled(images, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("labels") / "set"
    label(images, out, *FORMATS)
    return out


@pytest.fixture(scope="module")
def detected(images, tmp_path_factory) -> dict[str, list[dict]]:
    return detect(images, tmp_path_factory.mktemp("detect") / "res.json")


def coco_boxes(out: Path) -> dict[str, list[tuple[str, list[float], float]]]:
    """(category name, xyxy, score) per image file name, from instances.json read by pycocotools."""
    from pycocotools.coco import COCO

    coco = COCO(str(out / "instances.json"))
    names = {c["id"]: c["name"] for c in coco.loadCats(coco.getCatIds())}
    boxes = {}
    for image in coco.loadImgs(coco.getImgIds()):
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[image["id"]]))
        boxes[image["file_name"]] = [(names[a["category_id"]], [a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2],
                                                                a["bbox"][1] + a["bbox"][3]], a["score"]) for a in anns]
    return boxes


def as_detections(records: list[dict]) -> list[tuple[str, list[float], float]]:
    return [(d["query"], d["box"], d["score"]) for d in records]


def assert_same(found, expected, pixels: float = 0.011):
    """The same (name, box, score) lists, in order: boxes to `pixels`, scores exactly."""
    assert [(n, s) for n, _, s in found] == [(n, s) for n, _, s in expected]
    if expected:
        np.testing.assert_allclose([b for _, b, _ in found], [b for _, b, _ in expected], atol=pixels, rtol=0)


def test_coco_is_detects_boxes_and_loads_in_pycocotools(labelled, detected, images):
    data = json.loads((labelled / "instances.json").read_text())
    assert [c["name"] for c in data["categories"]] == QUERIES and [c["id"] for c in data["categories"]] == [1, 2, 3, 4]
    assert [a["id"] for a in data["annotations"]] == list(range(1, len(data["annotations"]) + 1))
    from PIL import Image

    for record in data["images"]:
        assert (record["width"], record["height"]) == Image.open(images / record["file_name"]).size
    for ann in data["annotations"]:
        assert ann["iscrowd"] == 0 and ann["area"] == pytest.approx(ann["bbox"][2] * ann["bbox"][3], abs=0.01)
    boxes = coco_boxes(labelled)
    assert set(boxes) == set(detected) and sum(map(len, boxes.values())) > 4
    for name, records in detected.items():
        assert_same(boxes[name], as_detections(records))


def test_yolo_boxes_equal_coco_boxes_to_one_pixel(labelled, images):
    from PIL import Image

    coco = coco_boxes(labelled)
    for name, expected in coco.items():
        width, height = Image.open(images / name).size
        lines = (labelled / "labels" / f"{Path(name).stem}.txt").read_text().splitlines()
        found = []
        for line in lines:
            cls, cx, cy, w, h = line.split()
            cx, w, cy, h = float(cx) * width, float(w) * width, float(cy) * height, float(h) * height
            found.append((QUERIES[int(cls)], [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]))
        assert [n for n, _ in found] == [n for n, _, _ in expected]
        if expected:
            np.testing.assert_allclose([b for _, b in found], [b for _, b, _ in expected], atol=1.0, rtol=0)


def supervision_boxes(dataset) -> dict[str, tuple[list[str], np.ndarray]]:
    """(class names, xyxy) per image file name, sorted by box so readers' orders do not matter."""
    result = {}
    for path, _, dets in dataset:
        order = np.lexsort(dets.xyxy.T[::-1]) if len(dets) else []
        result[Path(path).name] = ([dataset.classes[c] for c in dets.class_id[order]], dets.xyxy[order])
    return result


def sorted_coco(labelled: Path) -> dict[str, tuple[list[str], np.ndarray]]:
    result = {}
    for name, dets in coco_boxes(labelled).items():
        boxes = np.array([b for _, b, _ in dets], dtype=np.float32).reshape(-1, 4)
        order = np.lexsort(boxes.T[::-1])
        result[name] = ([dets[i][0] for i in order], boxes[order])
    return result


@pytest.mark.parametrize("reader", ["coco", "yolo", "voc"])
def test_each_format_round_trips_through_supervision(reader, labelled, images):
    sv = pytest.importorskip("supervision")
    if reader == "coco":
        dataset = sv.DetectionDataset.from_coco(str(images), str(labelled / "instances.json"))
    elif reader == "yolo":
        dataset = sv.DetectionDataset.from_yolo(str(images), str(labelled / "labels"), str(labelled / "data.yaml"))
    else:
        dataset = sv.DetectionDataset.from_pascal_voc(str(images), str(labelled / "Annotations"))
    expected, found = sorted_coco(labelled), supervision_boxes(dataset)
    assert set(found) == set(expected)
    for name, (names, boxes) in expected.items():
        # sorting by box can order two labels of one box differently: compare the boxes, then the name sets
        assert sorted(found[name][0]) == sorted(names)
        np.testing.assert_allclose(found[name][1], boxes, atol=1.0 if reader != "coco" else 0.011, rtol=0)


def test_label_studio_tasks_hold_percent_rectangles_with_scores(labelled):
    tasks = json.loads((labelled / "tasks.json").read_text())
    coco = coco_boxes(labelled)
    data = json.loads((labelled / "instances.json").read_text())
    sizes = {im["file_name"]: (im["width"], im["height"]) for im in data["images"]}
    assert len(tasks) == len(coco)
    for task in tasks:
        name = task["data"]["image"].removeprefix("/data/local-files/?d=")
        (prediction,) = task["predictions"]
        found = []
        for result in prediction["result"]:
            assert result["type"] == "rectanglelabels" and (result["from_name"], result["to_name"]) == ("label", "image")
            w, h = result["original_width"], result["original_height"]
            assert (w, h) == sizes[name]
            v = result["value"]
            x0, y0 = v["x"] * w / 100, v["y"] * h / 100
            found.append((v["rectanglelabels"][0], [x0, y0, x0 + v["width"] * w / 100, y0 + v["height"] * h / 100],
                          result["score"]))
        assert_same(found, coco[name])
    config = (labelled / "label_config.xml").read_text()
    assert all(f'<Label value="{q}" />' in config for q in QUERIES) and 'toName="image"' in config


def test_every_file_written_carries_the_mark_and_a_rerun_replaces_them(labelled, images):
    listed = listed_files(labelled)
    files = sorted(p for p in labelled.rglob("*") if p.is_file())
    assert len(files) == 3 + 2 * 4 + 3  # coco; yolo's data.yaml, manifest, 4 labels; voc's 4; label studio's 3
    for path in files:
        ours = {".xml": xml_is_ours, ".txt": lambda p: is_listed(labelled, p, listed)}.get(path.suffix, file_mark.is_ours)
        assert ours(path), path
    before = {p: p.read_bytes() for p in files}
    label(images, labelled, *FORMATS)  # its own files: replaced without --overwrite, to the same bytes
    assert {p: p.read_bytes() for p in files} == before


def test_a_query_threshold_keeps_only_its_boxes_above_it(labelled, images, tmp_path):
    base = coco_boxes(labelled)
    out = tmp_path / "set"
    label(images, out, queries=["circle:0.5", *QUERIES[1:]])
    found = coco_boxes(out)
    for name, dets in base.items():
        assert_same(found[name], [d for d in dets if d[0] != "circle" or d[2] >= 0.5])
    assert sum(map(len, found.values())) < sum(map(len, base.values()))  # the threshold dropped some


def test_min_box_drops_the_small_boxes_only(labelled, images, tmp_path):
    base = coco_boxes(labelled)
    sides = sorted({min(b[2] - b[0], b[3] - b[1]) for dets in base.values() for _, b, _ in dets})  # distinct: boxes tie
    k = len(sides) // 2
    min_box = (sides[k - 1] + sides[k]) / 2  # between two boxes' sides: no box sits on the edge
    assert sides[k - 1] < min_box < sides[k]
    out = tmp_path / "set"
    label(images, out, "--min-box", str(min_box))
    found = coco_boxes(out)
    for name, dets in base.items():
        assert_same(found[name], [d for d in dets if min(d[1][2] - d[1][0], d[1][3] - d[1][1]) >= min_box])
    assert 0 < sum(map(len, found.values())) < sum(map(len, base.values()))


def max_iou(boxes: list[list[float]]) -> float:
    if len(boxes) < 2:
        return 0.0
    iou = box_iou(torch.tensor(boxes), torch.tensor(boxes)).fill_diagonal_(0)
    return float(iou.max())


def test_agnostic_nms_keeps_one_label_per_object_as_detect_does(labelled, images, tmp_path):
    base = coco_boxes(labelled)
    assert max(max_iou([b for _, b, _ in dets]) for dets in base.values()) > 0.9  # 'red circle' is a 'circle' too
    out = tmp_path / "set"
    label(images, out, "--agnostic-nms", "0.5")
    found = coco_boxes(out)
    assert max(max_iou([b for _, b, _ in dets]) for dets in found.values()) <= 0.5
    expected = detect(images, tmp_path / "res.json", "--agnostic-nms", "--nms", "0.5")
    for name, records in expected.items():
        assert_same(found[name], as_detections(records))


def test_an_unreadable_image_is_named_and_the_others_are_labelled(images, tmp_path, capsys):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"")
    good = sorted(images.glob("*.png"))[:1]
    out = tmp_path / "set"
    assert main(["label", str(bad), *map(str, good), "-q", "circle", "--out", str(out), "--quiet"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert err[0].startswith("ovdet label: error: ") and str(bad) in err[0] and "0 bytes" in err[0]
    assert "1 of 2 images could not be read" in err[-1]
    data = json.loads((out / "instances.json").read_text())
    root = Path(data["info"]["images_root"])
    assert [root / im["file_name"] for im in data["images"]] == good  # the broken image is left out
