"""Compare two runs' detections as sets matched by box overlap, never by list order.

Two precisions (or a batched and a single pass) round differently, so near-tied scores swap places
(fp32 square 0.664 / star 0.660, int8 star 0.665 / square 0.662 on a Xeon with VNNI and no bf16):
a test that compared the sorted lists failed on one CPU and passed on another.
"""

from __future__ import annotations

import torch
from torchvision.ops import box_iou


def unmatched(detections: list, others: list, iou: float, score_tol: float) -> list:
    """The detections with no counterpart in `others`: same query, box IoU >= `iou`, score within `score_tol`.

    Args:
        detections, others: `ovdet.models.detection.Detection` lists of one image (`box` xyxy pixels).
    """
    missing = []
    for d in detections:
        same = [o for o in others if o.query == d.query]
        if not same:
            missing.append(d)
            continue
        overlap = box_iou(torch.tensor([d.box]), torch.tensor([o.box for o in same]))[0]  # [n]
        if not any(v >= iou and abs(o.score - d.score) <= score_tol for v, o in zip(overlap.tolist(), same)):
            missing.append(d)
    return missing
