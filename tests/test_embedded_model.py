"""The embedded default model: loads offline and finds a base and a novel shape in the bundled scene."""

import json

import pytest
import torch
from torchvision.ops import box_iou

from ovdet.cli.detect import DEFAULT_MODEL

SCENE = DEFAULT_MODEL.parent / "scene.png"
pytestmark = pytest.mark.skipif(not (DEFAULT_MODEL / "config.json").is_file(), reason="no embedded model shipped")


@pytest.fixture(scope="module")
def detections():
    from ovdet.models.detector import Detector

    detector = Detector.from_pretrained(DEFAULT_MODEL)
    assert not detector.untrained
    names = ["circle", "square", "star", "triangle", "heart", "arrow", "trapezoid", "ring"]
    return detector.detect(SCENE, names, threshold=0.0, max_detections=50)[0]


def best_iou(detections, query, box):
    boxes = [d.box for d in detections if d.query == query]
    if not boxes:
        return 0.0
    return float(box_iou(torch.tensor(boxes), torch.tensor([box], dtype=torch.float32)).max())


@pytest.mark.parametrize("shape, split", [("star", "novel"), ("circle", "base")])
def test_finds_base_and_novel_shape_in_bundled_scene(detections, shape, split):
    """"Finds" = one of the query's 5 best detections points at a true object of that shape (its centre
    lies inside the true box) and overlaps it at IoU >= 0.3. The embedded model's boxes are coarse
    (AP75 is far below AP50, docs/RESULTS.md), so IoU 0.5 is not yet met for every object."""
    objects = json.loads((DEFAULT_MODEL.parent / "scene.json").read_text())
    truth = [o["box_xyxy"] for o in objects if o["shape"] == shape]
    top = [d for d in detections if d.query == shape][:5]
    assert any(points_at(d.box, box) and best_iou([d], shape, box) >= 0.3 for d in top for box in truth), (shape, split, top)


@pytest.mark.xfail(strict=True, reason="known weakness: the 2-core embedded model still gives absent shapes "
                   "(heart 0.60) higher scores than present ones (circle 0.34); see docs/RESULTS.md")
def test_other_shapes_are_not_found_where_nothing_is(detections):
    """No heart or arrow in the scene: their best scores stay below the true shapes' best scores."""
    best = {q: max((d.score for d in detections if d.query == q), default=0.0) for q in ("star", "circle", "heart", "arrow")}
    assert max(best["heart"], best["arrow"]) < min(best["star"], best["circle"]), best


def points_at(det_box, true_box) -> bool:
    cx, cy = (det_box[0] + det_box[2]) / 2, (det_box[1] + det_box[3]) / 2
    return true_box[0] <= cx <= true_box[2] and true_box[1] <= cy <= true_box[3]
