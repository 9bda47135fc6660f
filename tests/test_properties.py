"""Property tests (hypothesis): box geometry, postprocess and input cleaning hold for any input, not just examples."""

import math

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from torchvision.ops import box_convert, box_iou

from ovdet.boxes import grid_box_bias, inverse_sigmoid
from ovdet.preprocess import ImagePreprocessor

PAD = ImagePreprocessor(1)  # the resize-and-pad geometry: one factor, max(width, height)


def normalized_to_pixels(boxes, width, height):
    return PAD.to_original(boxes, (width, height))


def pixels_to_normalized(boxes, width, height):
    return PAD.to_normalized(boxes, (width, height))
from ovdet.data.coco_detection import clean_box
from ovdet.errors import ImageLoadError
from ovdet.image_io import load_image
from ovdet.postprocess import PostProcess

FAST = settings(max_examples=60, deadline=None)
SPECIAL = st.sampled_from([math.nan, math.inf, -math.inf])
sizes = st.tuples(st.integers(1, 3000), st.integers(1, 3000))


def floats(lo, hi, special=True):
    plain = st.floats(lo, hi, width=32)
    return st.one_of(plain, SPECIAL) if special else plain


@st.composite
def model_outputs(draw, special=True):
    """`logits` [B, P, Q] and `pred_boxes` [B, P, 4] cxcywh, with out-of-range and (optionally) NaN/inf values."""
    b, p, q = draw(st.integers(1, 2)), draw(st.integers(1, 12)), draw(st.integers(1, 5))
    logits = draw(arrays(np.float32, (b, p, q), elements=floats(-12, 12, special)))
    boxes = draw(arrays(np.float32, (b, p, 4), elements=floats(-0.5, 1.5, special)))
    return {"logits": torch.from_numpy(logits), "pred_boxes": torch.from_numpy(boxes)}


def candidate_boxes(outputs, size):
    """What postprocess may choose from: every region's box in pixels, [B, P, 4]."""
    xyxy = box_convert(outputs["pred_boxes"].float(), "cxcywh", "xyxy")
    return torch.stack([normalized_to_pixels(b.clone(), *size) for b in xyxy])


@FAST
@given(model_outputs(), sizes, st.floats(0, 1), st.sampled_from([None, 0.3, 0.7, 1.0]), st.booleans(),
       st.integers(1, 20))
def test_postprocess_keeps_boxes_inside_scores_in_range_and_chooses_from_its_input(
    outputs, size, threshold, nms, agnostic, max_dets
):
    post = PostProcess(score_threshold=threshold, nms_threshold=nms, max_detections=max_dets, class_agnostic=agnostic)
    width, height = size
    results = post(outputs, [size] * len(outputs["logits"]))
    candidates = candidate_boxes(outputs, size)
    scores = outputs["logits"].sigmoid()
    for b, det in enumerate(results):
        boxes, det_scores, labels = det["boxes"], det["scores"], det["labels"]
        assert len(boxes) == len(det_scores) == len(labels) <= max_dets
        assert torch.isfinite(boxes).all()
        assert ((boxes[:, 0] >= 0) & (boxes[:, 2] <= width) & (boxes[:, 1] >= 0) & (boxes[:, 3] <= height)).all()
        assert ((boxes[:, 2] - boxes[:, 0] >= 0.5) & (boxes[:, 3] - boxes[:, 1] >= 0.5)).all()
        assert ((det_scores >= threshold) & (det_scores <= 1)).all()
        assert torch.equal(det_scores, det_scores.sort(descending=True).values)
        assert ((labels >= 0) & (labels < scores.shape[2])).all()
        for box, score, label in zip(boxes, det_scores, labels):  # every output is one of the input pairs
            same_box = (candidates[b] == box).all(dim=1)
            assert (same_box & (scores[b, :, label] == score)).any()
        if nms is not None and len(boxes) > 1:  # no kept pair overlaps another (of its query) above the IoU
            iou = box_iou(boxes, boxes).fill_diagonal_(0)
            same = torch.ones_like(iou, dtype=torch.bool) if agnostic else labels[:, None] == labels[None, :]
            assert (iou[same] <= nms + 1e-4).all()


@FAST
@given(model_outputs(special=False), sizes)
def test_postprocess_without_threshold_or_nms_keeps_every_pair_inside_the_image(outputs, size):
    post = PostProcess(score_threshold=0.0, nms_threshold=None, max_detections=10_000, topk_candidates=10_000)
    det = post(outputs, [size] * len(outputs["logits"]))[0]
    valid = candidate_boxes(outputs, size)[0]
    has_area = ((valid[:, 2] - valid[:, 0]) >= 0.5) & ((valid[:, 3] - valid[:, 1]) >= 0.5)
    assert len(det["scores"]) == int(has_area.sum()) * outputs["logits"].shape[2]


@FAST
@given(arrays(np.float32, (5, 4), elements=st.floats(0, 1, width=32)), sizes)
def test_pixels_round_trip_and_clip_to_the_image(norm, size):
    width, height = size
    side = max(width, height)
    boxes = torch.from_numpy(norm)
    boxes[:, 0::2] *= width / side  # inside the image's part of the padded square
    boxes[:, 1::2] *= height / side
    pixels = normalized_to_pixels(boxes.clone(), width, height)
    assert ((pixels[:, 0::2] >= 0) & (pixels[:, 0::2] <= width)).all()
    assert ((pixels[:, 1::2] >= 0) & (pixels[:, 1::2] <= height)).all()
    assert torch.allclose(pixels_to_normalized(pixels, width, height), boxes, atol=1e-5)


@FAST
@given(st.integers(1, 16), st.integers(1, 16))
def test_grid_prior_is_each_patch_itself(grid_h, grid_w):
    boxes = grid_box_bias(grid_h, grid_w).sigmoid()  # [h*w, 4] cxcywh
    assert torch.isfinite(grid_box_bias(grid_h, grid_w)).all()
    xyxy = box_convert(boxes, "cxcywh", "xyxy")
    assert (xyxy >= -1e-4).all() and (xyxy <= 1 + 1e-4).all()
    assert torch.allclose(boxes[:, 2], torch.full((grid_h * grid_w,), 1 / grid_w), atol=1e-3)


@FAST
@given(arrays(np.float32, (8,), elements=st.floats(0, 1, width=32)))
def test_inverse_sigmoid_is_finite_and_inverts(x):
    x = torch.from_numpy(x)
    y = inverse_sigmoid(x)
    assert torch.isfinite(y).all()
    inside = (x > 1e-3) & (x < 1 - 1e-3)
    assert torch.allclose(y.sigmoid()[inside], x[inside], atol=1e-4)


@FAST
@given(st.lists(st.one_of(st.floats(-50, 300), SPECIAL), min_size=4, max_size=4), st.integers(1, 200),
       st.integers(1, 200), st.floats(0.5, 4))
def test_clean_box_is_inside_the_image_or_dropped(bbox, width, height, min_size):
    box, status = clean_box(bbox, width, height, min_size)
    if box is None:
        assert status in ("malformed", "degenerate", "outside the image")
        return
    x0, y0, x1, y1 = box
    assert 0 <= x0 and x1 <= width and 0 <= y0 and y1 <= height
    assert x1 - x0 >= min_size and y1 - y0 >= min_size and status in ("ok", "clipped")


@FAST
@given(st.integers(0, 40), st.integers(0, 40), st.sampled_from([None, 1, 3, 4, 5]),
       st.sampled_from([np.uint8, np.float32, np.float64, np.int16]))
def test_any_array_gives_an_rgb_image_or_one_load_error(height, width, channels, dtype):
    shape = (height, width) if channels is None else (height, width, channels)
    array = (np.random.default_rng(0).random(shape) * (255 if dtype == np.uint8 else 1.0)).astype(dtype)
    try:
        image = load_image(array)
    except ImageLoadError:
        return
    assert image.mode == "RGB" and image.size == (width, height)
