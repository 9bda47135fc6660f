"""Attribute-phrase ground truth ("red star") and attribute confusion, on a tiny synthetic instances dict."""

from __future__ import annotations

import copy
import json

import pytest

from ovdet.evaluation.attribute_phrases import (
    attribute_confusion,
    build_phrase_gt,
    build_shape_gt,
    phrase_of,
    phrase_summary,
)
from ovdet.evaluation.evaluate import evaluate_model

CATEGORIES = [
    {"id": 1, "name": "circle", "supercategory": "shape", "split": "base"},
    {"id": 4, "name": "star", "supercategory": "shape", "split": "novel"},
    {"id": 7, "name": "square", "supercategory": "shape", "split": "base"},
]
# (image, shape id, colour): 3 red circles, 2 blue circles, 1 green circle, 2 red stars, 2 yellow stars, 1 square
OBJECTS = [(1, 1, "red"), (1, 4, "red"), (1, 1, "blue"), (2, 1, "red"), (2, 4, "yellow"), (2, 1, "green"),
           (3, 1, "red"), (3, 4, "red"), (3, 1, "blue"), (3, 4, "yellow"), (4, 7, "red")]  # fmt: skip


def _instances() -> dict:
    anns = []
    slot: dict[int, int] = {}
    for k, (img, cat, colour) in enumerate(OBJECTS, start=1):
        x = 40 * slot.get(img, 0)  # side by side, never overlapping
        slot[img] = slot.get(img, 0) + 1
        anns.append({"id": k, "image_id": img, "category_id": cat, "bbox": [x + 2, 10, 30, 20], "area": 600,
                     "iscrowd": 0, "attributes": {"color": colour, "size": "small", "style": "solid"}})  # fmt: skip
    images = [{"id": i, "file_name": f"{i:06d}.png", "width": 200, "height": 100} for i in range(1, 6)]
    return {"images": images, "annotations": anns, "categories": copy.deepcopy(CATEGORIES)}


def _as_predictions(gt: dict) -> list[dict]:
    return [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 0.9}
            for a in gt["annotations"]]  # fmt: skip


def _names(gt: dict) -> dict[str, int]:
    return {c["name"]: c["id"] for c in gt["categories"]}


def test_phrase_gt_counts_filter_and_split():
    instances = _instances()
    before = copy.deepcopy(instances)
    gt = build_phrase_gt(instances, min_instances=2)
    assert instances == before  # pure: the input is not touched
    names = [c["name"] for c in gt["categories"]]
    assert names == ["blue circle", "red circle", "red star", "yellow star"]  # json's shape order, then value
    assert [c["id"] for c in gt["categories"]] == [1, 2, 3, 4]
    counts = {n: sum(a["category_id"] == i for a in gt["annotations"]) for n, i in _names(gt).items()}
    assert counts == {"blue circle": 2, "red circle": 3, "red star": 2, "yellow star": 2}
    split = {c["name"]: c["split"] for c in gt["categories"]}
    assert split == {"blue circle": "base", "red circle": "base", "red star": "novel", "yellow star": "novel"}
    assert {c["name"]: c["shape"] for c in gt["categories"]}["yellow star"] == "star"
    assert gt["info"]["dropped_phrases"] == {"green circle": 1, "red square": 1}
    assert gt["info"]["dropped_objects"] == 2
    assert len(gt["images"]) == 5  # images without kept objects stay: false positives there count
    colour = {a["id"]: a["attributes"]["color"] for a in instances["annotations"]}
    cats = {c["id"]: c for c in gt["categories"]}
    assert all(cats[a["category_id"]]["attribute"] == colour[a["id"]] for a in gt["annotations"])


def test_phrase_gt_shapes_and_min_instances():
    gt = build_phrase_gt(_instances(), shapes=["star"], min_instances=1)
    assert [c["name"] for c in gt["categories"]] == ["red star", "yellow star"]
    assert build_phrase_gt(_instances(), min_instances=3)["info"]["dropped_objects"] == 8  # only red circle left
    assert phrase_of("red", "star") == "red star"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"shapes": ["blob"]}, "unknown shapes"), ({"min_instances": 0}, "min_instances"),
     ({"min_instances": 4}, "lower --min-instances"), ({"attribute": "texture"}, "attributes\\['texture'\\]")],
)  # fmt: skip
def test_phrase_gt_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        build_phrase_gt(_instances(), **kwargs)


def test_phrase_gt_as_predictions_gives_ap_100(tmp_path):
    gt = build_phrase_gt(_instances(), min_instances=2)
    preds = tmp_path / "preds.json"
    preds.write_text(json.dumps(_as_predictions(gt)))
    metrics = evaluate_model(None, gt, predictions=preds).metrics
    assert metrics["AP50_novel"] == pytest.approx(100.0)
    assert metrics["AP50_base"] == pytest.approx(100.0)
    assert [r["AP50"] for r in metrics["per_category"]] == pytest.approx([100.0] * 4)
    assert metrics["num_novel"] == 2 and metrics["num_base"] == 2


def test_wrong_colour_costs_phrase_ap_not_shape_ap(tmp_path):
    gt = build_phrase_gt(_instances(), min_instances=2)
    shape_gt = build_shape_gt(_instances(), shapes=["circle", "star"])
    assert [c["name"] for c in shape_gt["categories"]] == ["circle", "star"]
    preds = _as_predictions(gt)
    ids = _names(gt)
    wrong = next(p for p in preds if p["category_id"] == ids["red star"])
    wrong["category_id"] = ids["yellow star"]  # right shape, wrong colour
    (tmp_path / "p.json").write_text(json.dumps(preds))
    phrase = evaluate_model(None, gt, predictions=tmp_path / "p.json").metrics
    shape_preds = [{**p, "category_id": 1 if "circle" in _by_id(gt, p) else 4} for p in _as_predictions(gt)]
    (tmp_path / "s.json").write_text(json.dumps(shape_preds))
    shape = evaluate_model(None, shape_gt, predictions=tmp_path / "s.json").metrics
    summary = phrase_summary(phrase, shape, gt)
    rows = {r["phrase"]: r for r in summary["phrases"]}
    assert rows["red star"]["AP50"] < 100 and rows["yellow star"]["AP50"] < 100
    assert rows["red circle"]["AP50"] == pytest.approx(100.0) and rows["red star"]["instances"] == 2
    star = next(s for s in summary["shapes"] if s["shape"] == "star")
    assert star["shape_AP50"] == pytest.approx(100.0) and star["split"] == "novel" and star["phrases"] == 2
    assert star["attribute_cost"] == pytest.approx(100.0 - star["phrase_AP50"]) and star["attribute_cost"] > 0


def _by_id(gt: dict, pred: dict) -> str:
    return next(c["name"] for c in gt["categories"] if c["id"] == pred["category_id"])


def test_attribute_confusion_counts_right_and_wrong_colours():
    gt = build_phrase_gt(_instances(), min_instances=2)
    ids = _names(gt)
    preds = _as_predictions(gt)
    perfect = attribute_confusion(gt, preds)
    assert perfect["all"]["objects"] == perfect["all"]["localized"] == 9
    assert perfect["novel"]["attribute_accuracy"] == perfect["base"]["both_accuracy"] == pytest.approx(100.0)
    assert perfect["confusions"] == []

    star = next(p for p in preds if p["category_id"] == ids["red star"])
    # the same box scored for two phrases: the better-scored one ("yellow star") is the answer
    preds.append({**star, "category_id": ids["yellow star"], "score": 0.95})
    # a red circle whose only box is far off: not localized, left out of the accuracy
    lost = next(p for p in preds if p["category_id"] == ids["red circle"])
    lost["bbox"] = [150, 70, 10, 10]
    result = attribute_confusion(gt, preds)
    assert result["novel"]["localized"] == 4 and result["novel"]["attribute_accuracy"] == pytest.approx(75.0)
    assert result["novel"]["shape_accuracy"] == pytest.approx(100.0)
    assert result["base"]["objects"] == 5 and result["base"]["localized"] == 4
    assert result["base"]["attribute_accuracy"] == pytest.approx(100.0)
    assert result["confusions"] == [{"true": "red", "predicted": "yellow", "count": 1}]
    assert attribute_confusion(gt, [])["all"]["attribute_accuracy"] == -1.0
