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
    """"Finds" = the query's best detection points at a true object of that shape (its centre lies
    inside the true box) and overlaps it at IoU >= 0.5, the AP50 criterion."""
    objects = json.loads((DEFAULT_MODEL.parent / "scene.json").read_text())
    truth = [o["box_xyxy"] for o in objects if o["shape"] == shape]
    top = [d for d in detections if d.query == shape][:1]
    assert any(points_at(d.box, box) and best_iou([d], shape, box) >= 0.5 for d in top for box in truth), (shape, split, top)


def points_at(det_box, true_box) -> bool:
    cx, cy = (det_box[0] + det_box[2]) / 2, (det_box[1] + det_box[3]) / 2
    return true_box[0] <= cx <= true_box[2] and true_box[1] <= cy <= true_box[3]


def test_other_shapes_are_not_found_where_nothing_is(detections):
    """No heart or arrow in the scene: their best scores stay below the true shapes' best scores."""
    best = {q: max((d.score for d in detections if d.query == q), default=0.0) for q in ("star", "circle", "heart", "arrow")}
    assert max(best["heart"], best["arrow"]) < min(best["star"], best["circle"]), best


def test_a_single_query_is_not_given_to_every_object():
    """Alone, "star" must still lose the circle's and the square's crops (the model's reference names
    compete in the crop softmax): its best box is the star, and no box on the square scores as high."""
    from ovdet.models.detector import Detector

    objects = json.loads((DEFAULT_MODEL.parent / "scene.json").read_text())
    star = next(o["box_xyxy"] for o in objects if o["shape"] == "star")
    square = next(o["box_xyxy"] for o in objects if o["shape"] == "square")
    dets = Detector.from_pretrained(DEFAULT_MODEL).detect(SCENE, ["star"], threshold=0.0)[0]
    assert best_iou(dets[:1], "star", star) >= 0.5
    on_square = [d.score for d in dets if best_iou([d], "star", square) >= 0.5]
    assert max(on_square, default=0.0) < dets[0].score / 2, (on_square, dets[0])
