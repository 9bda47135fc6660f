"""Negative queries: a detection whose region matches a negative at least as well as its positive is dropped.

Negatives are scored together with the positives (with crop re-scoring they compete in one
softmax), but detections come from the positives alone and are only ever removed afterwards, so
a negative can never add a detection, nor change the score of one it keeps.
"""

from __future__ import annotations

import torch
from torchvision.ops import box_convert

from ovdet.boxes import normalized_to_pixels

# Logits this close count as a tie: the same embedding in two columns of one matmul may differ in
# the last bits, and a negative equal to the positive must still remove it.
TIE_TOLERANCE = 1e-4


def negative_veto(joint_logits: torch.Tensor, num_positive: int) -> torch.Tensor:
    """Which (region, positive) pairs a negative beats.

    Args:
        joint_logits: [B, P, Q + N] positives first, then negatives, scored together.
        num_positive: Q.
    Returns:
        [B, P, Q] bool, True where the region's best negative logit >= its positive logit (a tie, up
        to TIE_TOLERANCE, drops it: a negative equal to the positive removes all of its detections).
    """
    positive, negative = joint_logits[..., :num_positive], joint_logits[..., num_positive:]
    best_negative = negative.max(dim=-1, keepdim=True).values  # [B, P, 1]
    return best_negative >= positive - TIE_TOLERANCE  # [B, P, Q]


def drop_vetoed(
    detections: dict[str, torch.Tensor], pred_boxes: torch.Tensor, veto: torch.Tensor, size: tuple[int, int]
) -> dict[str, torch.Tensor]:
    """Remove one image's detections whose (region, query) pair is vetoed.

    PostProcess returns boxes, not region indices; a detection's region is found again by its box,
    recomputed with the same operations (any region with that box and a veto drops it).

    Args:
        detections: PostProcess output for one image: `boxes` [K, 4] xyxy pixels, `scores` [K], `labels` [K].
        pred_boxes: [P, 4] cxcywh in 0..1 of the padded square.
        veto: [P, Q] bool from `negative_veto`.
        size: the image's original (width, height).
    """
    region_boxes = normalized_to_pixels(box_convert(pred_boxes.float(), "cxcywh", "xyxy"), *size).cpu()  # [P, 4]
    boxes, labels = detections["boxes"], detections["labels"]
    same_box = torch.isclose(boxes[:, None, :], region_boxes[None], atol=1e-3, rtol=0).all(-1)  # [K, P]
    vetoed = (same_box & veto.cpu().T[labels]).any(dim=1)  # [K]
    return {key: value[~vetoed] for key, value in detections.items()}
