"""Read and check COCO-style results (image_id, category_id, bbox xywh, score) at the boundary."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

RESULT_KEYS = ("image_id", "category_id", "bbox", "score")


def load_json(source: str | Path | dict | list) -> dict | list:
    """A json file's content, or `source` itself when it is already loaded."""
    if isinstance(source, (dict, list)):
        return source
    path = Path(source)
    if not path.is_file():
        raise ValueError(f"json file '{path}' not found")
    with path.open() as f:
        return json.load(f)


def load_predictions(
    predictions: str | Path | Sequence[dict],
    image_ids: Iterable[int],
    cat_ids: Iterable[int],
) -> list[dict]:
    """Fresh copies of the detections (the COCO and LVIS APIs write into them), checked.

    Raises ValueError when a detection misses a key or names an image or category that the
    ground truth does not have: pycocotools would assert or silently drop them.
    """
    raw = load_json(predictions)
    if not isinstance(raw, list):
        raise ValueError(f"predictions must be a COCO results list, got {type(raw).__name__}")
    dets = []
    for i, det in enumerate(raw):
        missing = [k for k in RESULT_KEYS if k not in det]
        if missing:
            raise ValueError(f"prediction {i} lacks {missing}; COCO results need {list(RESULT_KEYS)}")
        dets.append({k: det[k] for k in RESULT_KEYS})
    _check_ids("image_id", {d["image_id"] for d in dets}, set(image_ids))
    _check_ids("category_id", {d["category_id"] for d in dets}, set(cat_ids))
    return dets


def _check_ids(key: str, used: set, known: set) -> None:
    unknown = sorted(used - known)
    if unknown:
        raise ValueError(
            f"predictions use {key} values that the ground truth lacks: {unknown[:10]}"
            f"{' ...' if len(unknown) > 10 else ''}; evaluate against the annotation json they came from"
        )
