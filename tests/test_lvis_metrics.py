"""LVIS federated rules on a handcrafted json: negatives punish, unverified and not-exhaustive do not."""

import json

import numpy as np
import pytest

pytest.importorskip("lvis", reason="install with: pip install --no-deps lvis==0.5.3")

from ovdet.evaluation.lvis_metrics import evaluate_lvis, run_lvis  # noqa: E402

# image 1: apple + banana, cherry verified absent; image 2: cherry, apple absent;
# image 3: apple, but apples not exhaustively boxed there; banana absent. durian: no gt anywhere.
CATEGORIES = [("apple", "f"), ("banana", "c"), ("cherry", "r"), ("durian", "r")]
IMAGES = [(1, [3], []), (2, [1], []), (3, [2], [1])]  # id, neg_category_ids, not_exhaustive_category_ids
BOXES = [(1, 1, [10, 10, 30, 30]), (1, 2, [50, 50, 40, 40]), (2, 3, [20, 20, 50, 50]), (3, 1, [5, 5, 40, 40])]


def make_lvis() -> dict:
    return {
        "images": [{"id": i, "width": 100, "height": 100, "neg_category_ids": neg, "not_exhaustive_category_ids": ne}
                   for i, neg, ne in IMAGES],  # fmt: skip
        "categories": [{"id": i + 1, "name": n, "frequency": f} for i, (n, f) in enumerate(CATEGORIES)],
        "annotations": [{"id": k + 1, "image_id": img, "category_id": c, "bbox": b, "area": b[2] * b[3]}
                        for k, (img, c, b) in enumerate(BOXES)],  # fmt: skip
    }


def perfect(score: float = 0.5) -> list[dict]:
    return [{"image_id": img, "category_id": c, "bbox": b, "score": score} for img, c, b in BOXES]


def extra(image_id: int, category_id: int) -> dict:
    """A confident detection far from every box of that image."""
    return {"image_id": image_id, "category_id": category_id, "bbox": [70, 0, 25, 25], "score": 0.9}


def ap(m: dict, name: str) -> float:
    return next(r["AP"] for r in m["per_category"] if r["name"] == name)


def test_gt_as_predictions_scores_100():
    m = evaluate_lvis(make_lvis(), perfect())
    for key in ("AP", "AP50", "APr", "APc", "APf", "AP_novel", "AP_base"):
        assert m[key] == pytest.approx(100.0)
    assert ap(m, "durian") == -1.0  # no gt anywhere: left out of APr
    assert {r["name"]: r["split"] for r in m["per_category"]}["cherry"] == "novel"  # rare = novel
    assert not hasattr(np, "float")  # the numpy-2 shim lives in lvis.eval's namespace only


def test_detection_of_a_negative_category_is_a_false_positive():
    m = evaluate_lvis(make_lvis(), perfect() + [extra(1, 3)])  # cherry verified absent in image 1
    assert ap(m, "cherry") == pytest.approx(50.0)  # the FP outranks the only TP
    assert m["APr"] == pytest.approx(50.0) and m["AP"] < 99.0
    assert m["APf"] == pytest.approx(100.0)


def test_detection_of_an_unverified_category_is_ignored():
    base = evaluate_lvis(make_lvis(), perfect())
    m = evaluate_lvis(make_lvis(), perfect() + [extra(3, 3)])  # nobody checked cherries in image 3
    assert m["APr"] == base["APr"] and m["AP"] == base["AP"]


def test_unmatched_detection_of_a_not_exhaustive_category_is_not_penalised():
    base = evaluate_lvis(make_lvis(), perfect())
    ignored = evaluate_lvis(make_lvis(), perfect() + [extra(3, 1)])  # apples not exhaustive in image 3
    assert ignored["APf"] == base["APf"] == pytest.approx(100.0)
    counted = evaluate_lvis(make_lvis(), perfect() + [extra(1, 1)])  # same detection where apples are exhaustive
    assert counted["APf"] < 99.0


def test_max_dets_keeps_the_top_scoring_per_image():
    preds = perfect(score=0.5) + [extra(1, 1), extra(1, 1)]  # two apples outrank image 1's banana
    assert ap(evaluate_lvis(make_lvis(), preds, max_dets=2), "banana") == 0.0
    assert ap(evaluate_lvis(make_lvis(), preds, max_dets=300), "banana") == pytest.approx(100.0)


def test_empty_predictions_path_and_precision(tmp_path):
    gt_path, preds_path = tmp_path / "gt.json", tmp_path / "preds.json"
    gt_path.write_text(json.dumps(make_lvis()))
    preds_path.write_text("[]")
    m = evaluate_lvis(gt_path, preds_path)
    assert (m["AP"], m["APr"], m["APc"], m["APf"], m["num_predictions"]) == (0.0, 0.0, 0.0, 0.0, 0)
    result = run_lvis(gt_path, perfect(), meta={"templates": "single"})
    assert result.precision.shape == (10, 101, 4) and np.all(result.precision[:, :, 3] == -1)
    assert result.metrics["meta"] == {"templates": "single"}
    json.dumps(result.metrics)


def test_coco_json_is_refused_with_a_hint():
    gt = make_lvis()
    del gt["images"][0]["neg_category_ids"]
    with pytest.raises(ValueError, match="neg_category_ids.*evaluate_coco_ov"):
        evaluate_lvis(gt, perfect())


def test_importing_lvis_leaves_the_applications_logging_alone():
    """`lvis` calls logging.basicConfig at import: a root handler bound to that moment's stderr, which later
    log calls from anywhere wrote to (a demo test failed on "--- Logging error ---" once it was closed)."""
    import subprocess
    import sys

    code = ("import logging; import ovdet.evaluation.lvis_compat; "
            "assert logging.getLogger().handlers == [], logging.getLogger().handlers")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
