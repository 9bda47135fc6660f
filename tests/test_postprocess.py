import pytest
import torch
from torchvision.ops import box_convert

from ovdet.errors import OvdetError
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


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"score_threshold": 1.5}, r"score_threshold must be a number in \[0, 1\].*got 1.5"),
        ({"score_threshold": -0.01}, r"score_threshold must be .*got -0.01"),
        ({"score_threshold": float("nan")}, r"score_threshold must be .*got nan"),
        ({"score_threshold": "0.3"}, r"score_threshold must be .*got '0.3'"),
        ({"nms_threshold": 0.0}, r"nms_threshold must be an IoU in \(0, 1\].*got 0.0"),
        ({"nms_threshold": 1.01}, r"nms_threshold must be .*got 1.01"),
        ({"nms_threshold": float("nan")}, r"nms_threshold must be .*got nan"),
        ({"max_detections": 0}, r"max_detections must be a positive integer, got 0"),
        ({"max_detections": -3}, r"max_detections must be a positive integer, got -3"),
        ({"max_detections": 2.5}, r"max_detections must be a positive integer, got 2.5"),
        ({"max_detections": True}, r"max_detections must be a positive integer, got True"),
        ({"topk_candidates": 10.0}, r"topk_candidates must be a positive integer, got 10.0"),
    ],
)
def test_bad_settings_are_rejected_in_one_line_naming_the_value(kwargs, message):
    with pytest.raises(OvdetError, match=message) as err:
        PostProcess(**kwargs)
    assert "\n" not in str(err.value)


def test_settings_at_the_boundaries_are_accepted():
    import numpy as np

    post = PostProcess(score_threshold=0, nms_threshold=1, max_detections=np.int64(1), topk_candidates=1)
    assert (post.score_threshold, post.nms_threshold, post.max_detections) == (0.0, 1.0, 1)
    assert PostProcess(score_threshold=1.0, nms_threshold=None).nms_threshold is None


def _hf_reference(logits, boxes_xyxy_norm, threshold, size, processor):
    """transformers' own post-processing of the same outputs (`processor`: an OWL-ViT or OWLv2 image processor)."""
    from types import SimpleNamespace

    out = SimpleNamespace(logits=logits, pred_boxes=box_convert(boxes_xyxy_norm, "xyxy", "cxcywh"))
    width, height = size
    side = max(width, height)  # OWLv2 pads to a square: its boxes scale by the longer side
    target = (height, width) if type(processor).__name__.startswith("OwlViT") else (side, side)
    return processor.post_process_object_detection(out, threshold=threshold, target_sizes=[target])[0]


@pytest.mark.parametrize("processor_name", ["OwlViTImageProcessor", "Owlv2ImageProcessor"])
def test_hf_mode_labels_equal_transformers_when_sigmoids_tie(processor_name):
    """Above a logit of ~16.6 float32 sigmoids round to 1.0 and tie: the label is the argmax of the logits."""
    import transformers

    processor = getattr(transformers, processor_name)()
    gen = torch.Generator().manual_seed(0)
    logits = 17.0 + 8.0 * torch.rand(1, 50, 6, generator=gen)  # [B, P, Q], every logit > 17
    logits[0, :10] = torch.randn(10, 6, generator=gen)  # and some ordinary regions
    corners = torch.rand(50, 2, generator=gen) * 0.5
    boxes = torch.cat([corners, corners + 0.1 + 0.4 * torch.rand(50, 2, generator=gen)], dim=1)[None]  # [1, P, 4]
    assert (logits[0, 10:].sigmoid() == 1.0).all()  # the ties this test is about
    size = (64, 48)
    ref = _hf_reference(logits, boxes, 0.1, size, processor)
    if processor_name == "OwlViTImageProcessor":  # stretch: boxes scale per axis
        from ovdet.preprocess import ImagePreprocessor

        to_original = ImagePreprocessor(32, mode="stretch").to_original
    else:
        to_original = None  # pad: one factor, the longer side
    ours = PostProcess(score_threshold=0.1, nms_threshold=None, max_detections=100, hf_compatible=True)(
        {"logits": logits, "pred_boxes": box_convert(boxes, "xyxy", "cxcywh")}, [size], to_original)[0]
    order = ours["regions"].argsort()  # transformers keeps region order; ours is sorted by score
    assert len(order) == len(ref["labels"]) == 50 - int((logits[0, :10].amax(-1).sigmoid() <= 0.1).sum())
    assert ours["labels"][order].tolist() == ref["labels"].tolist()
    torch.testing.assert_close(ours["scores"][order], ref["scores"], rtol=0, atol=1e-6)
    torch.testing.assert_close(ours["boxes"][order], ref["boxes"], rtol=0, atol=1e-3)


def test_a_box_under_its_own_query_threshold_suppresses_nothing():
    # "car" fires at 0.62 but asks for 0.7; "truck" at 0.57 asks for 0.3 on nearly the same box. Agnostic NMS
    # at the lowest threshold would let the car box (never reported) remove the truck box.
    boxes = [[0.1, 0.1, 0.4, 0.4], [0.11, 0.1, 0.4, 0.41]]
    logits = [[0.5, -9.0], [-9.0, 0.3]]  # sigmoid 0.62 (car), 0.57 (truck)
    out = _outputs(boxes, logits)
    floor_only = PostProcess(score_threshold=0.3, nms_threshold=0.5, class_agnostic=True)(out, [(64, 64)])[0]
    assert floor_only["labels"].tolist() == [0]  # the old order: the car box won the NMS
    own = PostProcess(score_threshold=0.3, nms_threshold=0.5, class_agnostic=True, query_thresholds=[0.7, 0.3])
    det = own(out, [(64, 64)])[0]
    assert det["labels"].tolist() == [1] and det["regions"].tolist() == [1]
    # Queries past the list (exemplars) keep score_threshold; a threshold out of range is refused.
    assert PostProcess(score_threshold=0.6, query_thresholds=[0.1])(out, [(64, 64)])[0]["labels"].tolist() == [0]
    with pytest.raises(ValueError, match="query threshold"):
        PostProcess(query_thresholds=[1.5])
