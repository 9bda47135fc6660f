import json
import math
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from synthetic_coco import CATEGORIES, write_synthetic_coco

from ovdet.data.coco_detection import CocoDetection, clean_box
from ovdet.data.collate import collate_detection
from ovdet.data.datamodule import CocoDataModule
from ovdet.data.transforms import Augmentation, build_transform
from ovdet.preprocess import OPENAI_MEAN, OPENAI_STD
from ovdet.text.templates import template_sets

S = 64


def _transform(augment=False):
    return build_transform(S, OPENAI_MEAN, OPENAI_STD, Augmentation() if augment else None)


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """Base (square, circle) and novel (triangle) objects, every one annotated."""
    folder = tmp_path_factory.mktemp("mixed")
    return write_synthetic_coco(folder, num_images=12, seed=1, max_objects=3), folder / "images"


def _targets_of(dataset):
    return collate_detection([dataset[i] for i in range(len(dataset))])


def test_novel_annotations_never_reach_the_loss_targets(mixed):
    json_path, images = mixed
    data = json.loads(json_path.read_text())
    base_boxes = [a for a in data["annotations"] if a["category_id"] != 3]
    assert any(a["category_id"] == 3 for a in data["annotations"])  # the json does have novel boxes
    ds = CocoDetection(json_path, images, _transform(augment=True), keep_negatives=True, max_queries=50, seed=0)
    assert ds.names == ["square", "circle"] and ds.split.novel == {"triangle"}
    batch = _targets_of(ds)
    labelled = [q[k] for q, t in zip(batch["queries"], batch["targets"]) for k in t["labels"].tolist()]
    assert set(labelled) <= {"square", "circle"}
    assert all(set(q) <= {"square", "circle"} for q in batch["queries"])  # not even as negatives
    # With no augmentation, the boxes are exactly the base annotations, scaled to the square.
    ds_eval = CocoDetection(json_path, images, _transform(), keep_negatives=True, max_queries=50)
    assert sum(len(ds_eval[i]["labels"]) for i in range(len(ds_eval))) == len(base_boxes)
    assert ds_eval.stats["other categories"] == len(data["annotations"]) - len(base_boxes)


def test_images_with_only_novel_objects_are_negatives_or_dropped(tmp_path):
    json_path = write_synthetic_coco(tmp_path, num_images=9, seed=2, max_objects=1)
    images = tmp_path / "images"
    only_novel = {a["image_id"] for a in json.loads(json_path.read_text())["annotations"] if a["category_id"] == 3}
    assert only_novel
    kept = CocoDetection(json_path, images, _transform(), keep_negatives=True)
    dropped = CocoDetection(json_path, images, _transform(), keep_negatives=False)
    assert len(kept) == 9 and kept.stats["negatives"] == len(only_novel)
    assert len(dropped) == 9 - len(only_novel)
    negative = next(i for i, r in enumerate(kept.records) if r.image_id in only_novel)
    sample = kept[negative]
    assert sample["labels"].numel() == 0 and sample["boxes_cxcywh"].shape == (0, 4)


def test_validation_set_keeps_novel_boxes_and_all_names(mixed):
    json_path, images = mixed
    ds = CocoDetection(json_path, images, _transform(), categories="all")
    sample = ds[0]
    assert sample["queries"] == ["square", "circle", "triangle"]
    assert sample["query_category_ids"] == [1, 2, 3]
    gt = ds.coco_gt()
    assert {a["category_id"] for a in gt["annotations"]} == {1, 2, 3}
    assert len(gt["images"]) == 12 and len(ds.coco_gt([1, 2])["images"]) == 2


def test_degenerate_and_outside_boxes_are_clipped_or_dropped_with_one_counted_warning(tmp_path):
    (tmp_path / "images").mkdir()
    Image.new("RGB", (40, 30), (100, 100, 100)).save(tmp_path / "images" / "a.png")
    boxes = [
        [10, 5, 10, 10],  # fine
        [-5, -5, 20, 20],  # sticks out: clipped to [0, 0, 15, 15]
        [35, 20, 30, 30],  # sticks out right and bottom: clipped
        [50, 50, 10, 10],  # wholly outside: dropped
        [5, 5, 0, 10],  # zero width: dropped
        [5, 5, -3, 4],  # negative size: dropped
        [math.nan, 1, 2, 3],  # not finite: dropped
        [1, 2, 3],  # malformed: dropped
    ]
    anns = [{"id": k + 1, "image_id": 1, "category_id": 1, "bbox": b, "iscrowd": 0} for k, b in enumerate(boxes)]
    anns.append({"id": 99, "image_id": 7, "category_id": 1, "bbox": [1, 1, 5, 5], "iscrowd": 0})  # unknown image
    data = {"images": [{"id": 1, "file_name": "a.png", "width": 40, "height": 30}], "annotations": anns,
            "categories": CATEGORIES[:1]}
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))  # NaN is written as NaN, which json.load accepts
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = CocoDetection(path, tmp_path / "images", _transform())
    messages = [str(w.message) for w in caught if "clipped" in str(w.message)]
    assert len(messages) == 1
    assert "clipped 2 boxes" in messages[0] and "dropped 6" in messages[0]
    assert "2 degenerate" in messages[0] and "1 outside the image" in messages[0] and "2 malformed" in messages[0]
    np.testing.assert_allclose(ds.records[0].boxes, [[10, 5, 20, 15], [0, 0, 15, 15], [35, 20, 40, 30]])
    sample = ds[0]
    assert sample["labels"].tolist() == [0, 0, 0]
    assert (sample["boxes_cxcywh"] >= 0).all() and (sample["boxes_cxcywh"] <= 1).all()


def test_clean_box_statuses():
    assert clean_box([1, 2, 3, 4], 10, 10) == ([1.0, 2.0, 4.0, 6.0], "ok")
    assert clean_box([8, 8, 5, 5], 10, 10) == ([8.0, 8.0, 10.0, 10.0], "clipped")
    assert clean_box([9.5, 0, 5, 5], 10, 10)[1] == "outside the image"  # half a pixel left
    assert clean_box(["x", 0, 1, 1], 10, 10)[1] == "malformed"
    assert clean_box(None, 10, 10)[1] == "malformed"


def test_split_by_name_list_and_base_names_override(mixed):
    json_path, images = mixed
    by_novel_names = CocoDetection(json_path, images, _transform(), split=["circle"], keep_negatives=True)
    assert by_novel_names.names == ["square", "triangle"]
    by_base = CocoDetection(json_path, images, _transform(), base_names=["circle"], keep_negatives=True)
    # base_names replaces the base set; the split's novel set stays, the rest is evaluated nowhere
    assert by_base.names == ["circle"] and by_base.split.novel == {"triangle"}
    assert by_base.eval_names == ["circle", "triangle"]
    no_split = CocoDetection(json_path, images, _transform(), split=None, base_names=["circle"], keep_negatives=True)
    assert no_split.split.novel == {"triangle"}  # the json's own "split" marks still name the novel ones
    with pytest.raises(ValueError, match="not categories"):
        CocoDetection(json_path, images, _transform(), base_names=["zebra"])
    with pytest.raises(ValueError, match="not in the ground truth"):
        CocoDetection(json_path, images, _transform(), split="ovcoco")  # COCO names are not in this json


def test_lvis_style_records_use_coco_url_and_missing_sizes_come_from_the_file(tmp_path):
    (tmp_path / "val2017").mkdir()
    Image.new("RGB", (32, 24)).save(tmp_path / "val2017" / "000000000042.jpg")
    data = {
        "images": [{"id": 42, "coco_url": "http://images.cocodataset.org/val2017/000000000042.jpg"}],
        "annotations": [{"id": 1, "image_id": 42, "category_id": 1, "bbox": [2, 2, 10, 10]}],
        "categories": [{"id": 1, "name": "square", "frequency": "f"}, {"id": 2, "name": "gong", "frequency": "r"}],
    }
    path = tmp_path / "lvis.json"
    path.write_text(json.dumps(data))
    ds = CocoDetection(path, tmp_path, _transform(), split="lvis")
    assert ds.names == ["square"] and ds.split.novel == {"gong"}
    assert ds.records[0].path == tmp_path / "val2017" / "000000000042.jpg"
    assert ds[0]["orig_size"] == (32, 24)


def test_bad_paths_and_options_raise(mixed, tmp_path):
    json_path, images = mixed
    with pytest.raises(ValueError, match="annotation file"):
        CocoDetection(tmp_path / "missing.json", images, _transform())
    with pytest.raises(ValueError, match="image folder"):
        CocoDetection(json_path, tmp_path / "nope", _transform())
    with pytest.raises(ValueError, match="categories"):
        CocoDetection(json_path, images, _transform(), categories="novel")


def test_reseed_gives_each_worker_its_own_augmentation(mixed):
    json_path, images = mixed
    ds = CocoDetection(json_path, images, _transform(augment=True), max_queries=2)
    draws = []
    for seed in (5, 5, 6):
        ds.reseed(seed)
        draws.append(ds[0]["pixel_values"])
    assert torch.equal(draws[0], draws[1]) and not torch.equal(draws[0], draws[2])


def test_datamodule_batches(mixed):
    json_path, images = mixed
    dm = CocoDataModule(json_path, images, json_path, images, image_size=S, augmentation=Augmentation(),
                        max_queries=2, train_templates="clip7", batch_size=4, num_workers=0)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["pixel_values"].shape == (4, 3, S, S)
    assert batch["query_mask"].shape == (4, 2) and batch["query_mask"].all()
    prompts = {t.format(n) for t in template_sets()["clip7"] for n in ("square", "circle")}
    assert all(len(q) == 2 and set(q) <= prompts for q in batch["queries"])
    val = next(iter(dm.val_dataloader()))
    assert val["queries"][0] == ["square", "circle", "triangle"]
    no_val = CocoDataModule(json_path, images, image_size=S, num_workers=0)
    no_val.setup("fit")
    assert no_val.val_dataloader() == []  # Lightning skips validation
    with pytest.raises(ValueError, match="both val_json and val_images"):
        CocoDataModule(json_path, images, val_json=json_path)
