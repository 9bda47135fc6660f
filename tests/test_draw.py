"""Drawn detections: every label readable, none on top of another (README's exemplar example had three)."""

from PIL import Image

from ovdet.draw import _overlap, draw_detections, label_rect
from ovdet.models.detection import Detection


def _det(box, score, label=0):
    return Detection(box=list(box), score=score, label=label, query=f"q{label}")


def test_labels_of_nested_boxes_do_not_overlap_and_stay_inside():
    boxes = [(38, 55, 133, 146), (65, 57, 148, 117), (37, 65, 86, 132), (40, 60, 130, 140)]
    placed = []
    for box in boxes:
        placed.append(label_rect(box, (70, 12), (320, 314), placed))
    for i, a in enumerate(placed):
        assert 0 <= a[0] and a[2] <= 320 and 0 <= a[1] and a[3] <= 314, a
        assert not any(_overlap(a, b) for b in placed[i + 1:]), placed


def test_a_label_at_the_image_edge_is_moved_inside():
    rect = label_rect((300, 0, 320, 10), (70, 12), (320, 314), [])
    assert rect[0] >= 0 and rect[2] <= 320 and rect[1] >= 0


def test_drawing_keeps_size_and_draws_in_the_query_colour():
    image = Image.new("RGB", (200, 100), "white")
    out = draw_detections(image, [_det((10, 20, 90, 80), 0.9), _det((12, 22, 88, 78), 0.5, label=1)])
    assert out.size == image.size and image.getpixel((10, 50)) == (255, 255, 255)
    assert out.getpixel((10, 50)) != (255, 255, 255)  # the box outline
