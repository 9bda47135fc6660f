"""Batch inference writes valid COCO results: loadRes round trip, top-k over all pairs, boxes in pixels."""

import contextlib
import io
import json
import os
import subprocess
import sys
from collections import Counter, defaultdict

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools.coco import COCO

from ovdet.evaluation.evaluate import detect_protocol, load_categories, predict_images, vocabulary_categories
from ovdet.evaluation.splits import Split, load_split
from ovdet.inference import images_from_coco, images_from_folder, predict_coco, read_meta, to_coco_results
from ovdet.models.detector import Detector

DDP_SCRIPT = """
import json, sys
from ovdet.inference import images_from_coco, predict_coco
from ovdet.models.detector import Detector
model, root, gt_path, out, devices = sys.argv[1:]
gt = json.load(open(gt_path))
recs = predict_coco(Detector.from_pretrained(model), images_from_coco(gt, root), root, gt["categories"],
                    batch_size=2, workers=0, max_dets=20, accelerator="cpu", devices=int(devices), progress=False)
if recs is not None:  # rank 0 only
    json.dump(recs, open(out, "w"))
"""

SIZES = [(100, 60), (50, 80), (64, 64), (120, 40), (30, 90)]
CATEGORIES = [{"id": 3, "name": "circle"}, {"id": 7, "name": "square"}, {"id": 11, "name": "star"}]


@pytest.fixture(scope="module")
def detector(tiny_clip_dir):
    return Detector.from_clip(str(tiny_clip_dir), image_size=64).eval()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Random-noise images of several aspect ratios and a COCO json listing them (one per subfolder level)."""
    root = tmp_path_factory.mktemp("imgs")
    (root / "sub").mkdir()
    rng = np.random.default_rng(0)
    images = []
    for i, (w, h) in enumerate(SIZES, start=1):
        name = f"sub/{i}.png" if i == 2 else f"{i}.png"
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(root / name)
        images.append({"id": 100 + i, "file_name": name, "width": w, "height": h})
    return root, {"images": images, "annotations": [], "categories": CATEGORIES}


def run(detector, dataset, **kw):
    root, gt = dataset
    kw = {"batch_size": 2, "workers": 0, "progress": False, **kw}
    return predict_coco(detector, images_from_coco(gt, root), root, gt["categories"], **kw)


def load_res(gt: dict, records: list[dict]) -> COCO:
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = json.loads(json.dumps(gt))
        coco.createIndex()
        return coco.loadRes(json.loads(json.dumps(records)))


def test_results_round_trip_loadres_and_respect_limits(detector, dataset):
    root, gt = dataset
    records = run(detector, dataset, max_dets=40)
    res = load_res(gt, records)
    assert len(res.getAnnIds()) == len(records) > 0
    per_image = Counter(r["image_id"] for r in records)
    assert set(per_image) == {img["id"] for img in gt["images"]}
    assert max(per_image.values()) <= 40
    sizes = {img["id"]: (img["width"], img["height"]) for img in gt["images"]}
    for r in records:
        assert set(r) == {"image_id", "category_id", "bbox", "score"}
        assert r["category_id"] in {c["id"] for c in CATEGORIES}
        x, y, w, h = r["bbox"]
        width, height = sizes[r["image_id"]]
        assert 0 <= x and 0 <= y and w > 0 and h > 0
        assert x + w <= width + 0.01 and y + h <= height + 0.01
        assert 0.0 <= r["score"] <= 1.0
    # ranked over all (box, category) pairs: some box carries several categories
    cats_per_box = defaultdict(set)
    for r in records:
        cats_per_box[(r["image_id"], tuple(r["bbox"]))].add(r["category_id"])
    assert max(len(c) for c in cats_per_box.values()) > 1


def test_results_sorted_by_image_then_score_and_top_k_is_a_prefix(detector, dataset):
    records = run(detector, dataset, max_dets=40)
    order = [img["id"] for img in dataset[1]["images"]]
    assert [r["image_id"] for r in records] == sorted((r["image_id"] for r in records), key=order.index)
    few = run(detector, dataset, max_dets=5)
    for img_id in order:
        scores = [r["score"] for r in records if r["image_id"] == img_id]
        assert scores == sorted(scores, reverse=True)
        assert [r for r in few if r["image_id"] == img_id] == [r for r in records if r["image_id"] == img_id][:5]


def test_workers_and_batch_size_do_not_change_results(detector, dataset):
    assert run(detector, dataset, max_dets=10, workers=2, batch_size=3) == run(detector, dataset, max_dets=10)


def test_nms_and_threshold_thin_the_results(detector, dataset):
    full = run(detector, dataset, max_dets=300, nms=None)
    thresholded = run(detector, dataset, max_dets=300, score_threshold=0.5, nms=None)
    assert all(r["score"] >= 0.5 for r in thresholded) and len(thresholded) < len(full)
    default, nms = run(detector, dataset, max_dets=300), run(detector, dataset, max_dets=300, nms=0.3)
    assert 0 < len(nms) <= len(default) <= len(full)  # NMS 0.5 by default, as ovdet detect


def test_boxes_follow_the_annotation_size_when_the_file_is_a_resized_copy(detector, dataset):
    root, gt = dataset
    doubled = dict(gt, images=[dict(img, width=2 * img["width"], height=2 * img["height"]) for img in gt["images"]])
    base = run(detector, dataset, max_dets=10)
    big = predict_coco(detector, images_from_coco(doubled, root), root, CATEGORIES, batch_size=2, workers=0,
                       max_dets=10, progress=False)  # fmt: skip
    assert [r["score"] for r in big] == [r["score"] for r in base]
    np.testing.assert_allclose([r["bbox"] for r in big], [[2 * v for v in r["bbox"]] for r in base], atol=0.02)


def test_to_coco_results_converts_xyxy_to_xywh_and_maps_labels():
    boxes = torch.tensor([[10.0, 20.0, 30.0, 60.0]])  # [1, 4] xyxy
    recs = to_coco_results(boxes, torch.tensor([0.75]), torch.tensor([1]), image_id=5, cat_ids=[3, 7], scale=(2.0, 0.5))
    assert recs == [{"image_id": 5, "category_id": 7, "bbox": [20.0, 10.0, 40.0, 20.0], "score": 0.75}]


def test_missing_images_fail_before_any_work(dataset, tmp_path):
    _, gt = dataset
    with pytest.raises(ValueError, match=r"5 of 5 images .* not under"):
        images_from_coco(gt, tmp_path)
    with pytest.raises(ValueError, match="not found"):
        images_from_coco(gt, tmp_path / "nope")


def test_folder_mode_writes_results_images_list_and_per_image_json(detector, dataset, tmp_path):
    root, _ = dataset
    entries = images_from_folder(root)
    assert [e["id"] for e in entries] == [1, 2, 3, 4, 5]
    assert [e["file_name"] for e in entries] == sorted(e["file_name"] for e in entries)
    out = tmp_path / "preds.json"
    recs = predict_images(detector, root, "circle, square", out, max_dets=7, workers=0, progress=False,
                          templates="photo", template_mode="logit")  # fmt: skip
    assert json.loads(out.read_text()) == recs and max(Counter(r["image_id"] for r in recs).values()) <= 7
    listing = json.loads((tmp_path / "preds.images.json").read_text())
    assert [c["name"] for c in listing["categories"]] == ["circle", "square"]
    load_res({**listing, "annotations": []}, recs)  # the generated ids make a valid COCO json
    per_image = json.loads((tmp_path / "preds.per_image.json").read_text())
    assert len(per_image) == 5 and sum(len(p["detections"]) for p in per_image) == len(recs)
    assert {d["query"] for p in per_image for d in p["detections"]} <= {"circle", "square"}
    meta = read_meta(out)
    assert meta["templates"] == "photo" and meta["template_mode"] == "logit" and meta["vocabulary_size"] == 2


def test_vocabulary_leaves_out_categories_outside_a_split_with_a_base_list():
    cats = [{"id": i, "name": n} for i, n in enumerate(["cat", "dog", "toaster"], start=1)]
    split = load_split(["cat"], cats)  # novel names only: every other category is base
    assert [c["name"] for c in vocabulary_categories(cats, split)] == ["cat", "dog", "toaster"]
    split = Split("s", novel=frozenset({"cat"}), base=frozenset({"dog"}))
    assert [c["name"] for c in vocabulary_categories(cats, split)] == ["cat", "dog"]
    assert len(vocabulary_categories(cats, split, "all")) == 3
    with pytest.raises(ValueError, match="vocabulary"):
        vocabulary_categories(cats, split, "some")


def test_protocol_and_category_helpers():
    assert detect_protocol({"images": [{"id": 1, "neg_category_ids": []}]}) == "lvis"
    assert detect_protocol({"images": [{"id": 1}]}) == "coco"
    assert load_categories("a, b,,c") == [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}, {"id": 3, "name": "c"}]
    with pytest.raises(ValueError, match="no category names"):
        load_categories(" , ")


def test_bad_arguments_name_the_value(detector, dataset):
    with pytest.raises(ValueError, match="batch size"):
        run(detector, dataset, batch_size=0)
    with pytest.raises(ValueError, match="unique"):
        predict_coco(detector, [], ".", [{"id": 1, "name": "a"}, {"id": 2, "name": "a"}])


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_gathers_the_single_process_results(detector, dataset, tmp_path):
    """Lightning relaunches the script per rank; each predicts a shard and rank 0 gathers them all."""
    root, gt = dataset
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "ddp.py").write_text(DDP_SCRIPT)
    model = detector.save_pretrained(tmp_path / "model")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    for devices in (1, 2):
        args = [str(model), str(root), str(tmp_path / "gt.json"), str(tmp_path / f"recs{devices}.json"), str(devices)]
        proc = subprocess.run([sys.executable, str(tmp_path / "ddp.py"), *args], capture_output=True, text=True,
                              env=env, cwd=tmp_path, timeout=600)  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-3000:]
    single, ddp = (json.loads((tmp_path / f"recs{d}.json").read_text()) for d in (1, 2))
    assert len({r["image_id"] for r in single}) == len(gt["images"])
    assert ddp == single
