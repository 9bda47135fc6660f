import pytest
import torch
from torchvision.ops import box_convert

from ovdet.postprocess import PostProcess


def _outputs(boxes_xyxy_norm, logits):
    return {"pred_boxes": box_convert(torch.tensor([boxes_xyxy_norm]), "xyxy", "cxcywh"), "logits": torch.tensor([logits])}


def test_rescales_to_original_pixels_for_non_square_image():
    # A 400x200 image padded to a square: the bottom half of the square is padding.
    out = _outputs([[0.25, 0.1, 0.5, 0.4]], [[5.0]])
    det = PostProcess(score_threshold=0.5)(out, [(400, 200)])[0]
    assert torch.allclose(det["boxes"], torch.tensor([[100.0, 40.0, 200.0, 160.0]]), atol=1e-3)
    tall = PostProcess(score_threshold=0.5)(out, [(100, 300)])[0]
    assert torch.allclose(tall["boxes"], torch.tensor([[75.0, 30.0, 100.0, 120.0]]), atol=1e-3)  # x clipped to width


def test_threshold_nms_and_boxes_in_padding():
    boxes = [[0.1, 0.1, 0.3, 0.3], [0.11, 0.1, 0.3, 0.31], [0.5, 0.1, 0.7, 0.3], [0.1, 0.8, 0.2, 0.9]]
    logits = [[4.0, -9.0], [3.0, -9.0], [-9.0, 2.0], [5.0, 5.0]]
    det = PostProcess(score_threshold=0.5, nms_threshold=0.5)(_outputs(boxes, logits), [(100, 50)])[0]
    # Box 1 is suppressed by box 0; box 3 lies in the padding (y > 0.5 of a 100x50 image) and is dropped.
    assert det["labels"].tolist() == [0, 1]
    assert det["scores"].tolist() == sorted(det["scores"].tolist(), reverse=True)
    no_nms = PostProcess(score_threshold=0.5, nms_threshold=None)(_outputs(boxes, logits), [(100, 50)])[0]
    assert len(no_nms["scores"]) == 3


def test_one_box_can_carry_several_queries_and_max_detections():
    out = _outputs([[0.1, 0.1, 0.5, 0.5]], [[3.0, 2.0, 1.0]])
    det = PostProcess(score_threshold=0.5)(out, [(64, 64)])[0]
    assert det["labels"].tolist() == [0, 1, 2]
    assert len(PostProcess(score_threshold=0.5, max_detections=2)(out, [(64, 64)])[0]["labels"]) == 2


@pytest.mark.parametrize("kwargs", [{"score_threshold": 1.5}, {"nms_threshold": 0.0}, {"max_detections": 0}])
def test_bad_settings_are_rejected(kwargs):
    with pytest.raises(ValueError):
        PostProcess(**kwargs)
