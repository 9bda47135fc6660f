"""Detections -> COCO results records (image_id, category_id, bbox xywh, score) and per-image views."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import torch

from ovdet.box_ops import box_convert


def to_coco_results(
    boxes_xyxy: torch.Tensor,
    scores: torch.Tensor,
    labels: torch.Tensor,
    image_id: int,
    cat_ids: Sequence[int],
    scale: tuple[float, float] = (1.0, 1.0),
) -> list[dict]:
    """One image's detections as COCO results.

    Args:
        boxes_xyxy: [K, 4] in the decoded image's pixels; scores: [K]; labels: [K] vocabulary index.
        cat_ids: category id of each vocabulary index.
        scale: (x, y) factors from the decoded image to the annotation's width/height (1 when equal).
    """
    factor = torch.tensor([scale[0], scale[1], scale[0], scale[1]], dtype=torch.float32)
    xywh = box_convert(boxes_xyxy.float().cpu() * factor, "xyxy", "xywh")  # [K, 4]
    return [
        {
            "image_id": image_id,
            "category_id": int(cat_ids[int(label)]),
            "bbox": [round(float(v), 2) for v in box],
            "score": round(float(score), 5),
        }
        for box, score, label in zip(xywh, scores.tolist(), labels.tolist())
    ]


def sort_results(records: list[dict], image_order: Sequence[int]) -> list[dict]:
    """Records grouped by image in `image_order`, best score first within an image.

    Shards gathered from several ranks arrive in any order; this makes the file deterministic.
    """
    by_image: dict[int, list[dict]] = defaultdict(list)
    for rec in records:
        by_image[rec["image_id"]].append(rec)
    rank = {img_id: i for i, img_id in enumerate(image_order)}
    ordered = []
    for img_id in sorted(by_image, key=lambda i: rank.get(i, len(rank))):
        ordered += sorted(by_image[img_id], key=lambda r: -r["score"])
    return ordered


def per_image_json(records: Sequence[dict], images: Sequence[dict], categories: Sequence[dict]) -> list[dict]:
    """A plain per-image view (file, size, detections with names and xyxy boxes) for folders without ground truth."""
    names = {c["id"]: c["name"] for c in categories}
    by_image: dict[int, list[dict]] = defaultdict(list)
    for rec in records:
        x, y, w, h = rec["bbox"]
        by_image[rec["image_id"]].append(
            {"box": [x, y, round(x + w, 2), round(y + h, 2)], "score": rec["score"],
             "category_id": rec["category_id"], "query": names[rec["category_id"]]}  # fmt: skip
        )
    return [
        {"image_id": img["id"], "file_name": img["file_name"], "width": img["width"], "height": img["height"],
         "detections": by_image.get(img["id"], [])}  # fmt: skip
        for img in images
    ]
