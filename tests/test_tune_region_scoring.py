"""tools/tune_region_scoring.py: the F1-best threshold, and refusals before any model loads."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import tune_region_scoring  # noqa: E402


def _coco():
    boxes = {1: [[0, 0, 10, 10], [20, 20, 10, 10]], 2: [[5, 5, 10, 10]]}  # xywh per image, category 1
    return {"images": [{"id": i} for i in boxes],
            "annotations": [{"image_id": i, "category_id": 1, "bbox": b} for i, bs in boxes.items() for b in bs]}


def _det(image_id, bbox, score, category_id=1):
    return {"image_id": image_id, "category_id": category_id, "bbox": bbox, "score": score}


def test_f1_threshold_separates_hits_from_misses():
    detections = [
        _det(1, [0, 0, 10, 10], 0.9),     # hit
        _det(2, [5, 5, 10, 10], 0.8),     # hit
        _det(1, [0, 0, 10, 10], 0.3),     # a duplicate of a matched object: a miss
        _det(1, [20, 20, 10, 10], 0.25, category_id=2),  # right place, wrong name: a miss
        _det(1, [21, 21, 10, 10], 0.2),   # hit (IoU 0.68)
    ]
    # F1 over the ranking: 0.5, 0.8, 0.67, 0.57, 0.75 -> the best cut is after 0.8, halfway to 0.3.
    best = tune_region_scoring.f1_threshold(detections, _coco())
    assert best == {"threshold": 0.55, "f1": 0.8, "precision": 1.0, "recall": 0.6667}


def test_f1_threshold_refuses_a_set_without_objects():
    with pytest.raises(tune_region_scoring.OvdetError, match="no annotated objects"):
        tune_region_scoring.f1_threshold([_det(1, [0, 0, 1, 1], 0.5)], {"images": [], "annotations": []})


@pytest.mark.parametrize("extra, message", [([], "no instances.json"), (["--weights", "1.5"], "weights lie in")])
def test_bad_arguments_are_refused_in_one_line(tmp_path, capsys, extra, message):
    tune = tmp_path / "tune"
    if extra:
        (tune / "images").mkdir(parents=True)
        (tune / "instances.json").write_text("{}")
    assert tune_region_scoring.main(["no-such-model", str(tune), *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
