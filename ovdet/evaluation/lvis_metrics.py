"""LVIS box metrics (AP, APr, APc, APf) with the LVIS API's federated evaluation."""

from __future__ import annotations

import contextlib
import copy
import logging
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ovdet.data.coco_validation import check_eval_json
from ovdet.evaluation.lvis_compat import LVISEval, LVISResults, empty_results, lvis_from_dict
from ovdet.evaluation.predictions import load_json, read_predictions, warn_dropped
from ovdet.evaluation.result import EvalResult, mean_precision
from ovdet.evaluation.splits import Split, load_split

IMAGE_KEYS = ("neg_category_ids", "not_exhaustive_category_ids")


def evaluate_lvis(
    gt: str | Path | dict,
    predictions: str | Path | Sequence[dict],
    split: str | Path | Sequence[str] | Split | None = "lvis",
    *,
    max_dets: int = 300,
    meta: dict | None = None,
    verbose: bool = False,
) -> dict:
    """The metrics dict of `run_lvis` (what metrics.json holds); see there."""
    return run_lvis(gt, predictions, split, max_dets=max_dets, meta=meta, verbose=verbose).metrics


def run_lvis(
    gt: str | Path | dict,
    predictions: str | Path | Sequence[dict],
    split: str | Path | Sequence[str] | Split | None = "lvis",
    *,
    max_dets: int = 300,
    meta: dict | None = None,
    verbose: bool = False,
) -> EvalResult:
    """Box AP with `LVISEval`: federated, so only categories verified for an image count there.

    gt: LVIS annotation json (path or dict): images carry `neg_category_ids` and
    `not_exhaustive_category_ids`, categories carry `frequency` (r/c/f).
    predictions: COCO results (list or json path), read as a stream; the top `max_dets` per image
        are kept while reading (what `LVISResults` keeps), so millions of detections fit in memory.
    split: labels categories novel/base for `per_category` and AP_novel/AP_base; default rare = novel.

    The LVIS API decides what counts: a detection of a category that is neither in the image's
    gt nor in its `neg_category_ids` is dropped; one in `neg_category_ids` is a false positive;
    unmatched detections of a `not_exhaustive` category are ignored. Categories without any gt
    are -1 and left out of the means. Numbers are percent (-1 where undefined).
    """
    with _quiet(verbose):
        lvis_gt = _load_gt(gt)
        split = load_split(split, list(lvis_gt.cats.values()))
        dets, dropped = read_predictions(predictions, lvis_gt.get_img_ids(), lvis_gt.get_cat_ids(), max_dets)
        lvis_dt = LVISResults(lvis_gt, dets, max_dets=max_dets) if dets else empty_results(lvis_gt)
        ev = LVISEval(lvis_gt, lvis_dt, iou_type="bbox")
        ev.params.max_dets = max_dets
        ev.run()
    warn_dropped(dropped, len(dets), f"LVIS counts the best {max_dets} of each image")
    if verbose:
        ev.print_results()
    p = ev.eval["precision"][:, :, :, 0]  # [T, R, K] area "all"
    cat_ids = [int(c) for c in ev.params.cat_ids]
    groups = [split.group_of(lvis_gt.cats[c]["name"]) if split else "base" for c in cat_ids]
    metrics = {k: (float(v) * 100.0 if v >= 0 else -1.0) for k, v in ev.get_results().items()}
    t50 = int(np.flatnonzero(np.isclose(ev.params.iou_thrs, 0.5))[0])
    for g in ("novel", "base"):
        idx = [k for k, grp in enumerate(groups) if grp == g]
        metrics[f"AP_{g}"], metrics[f"AP50_{g}"] = mean_precision(p, idx), mean_precision(p, idx, t50)
    num_gt = Counter(a["category_id"] for a in lvis_gt.dataset["annotations"])
    metrics.update(
        protocol="lvis",
        split=split.name if split else None,
        num_images=len(ev.params.img_ids),
        num_predictions=len(dets),
        num_predictions_dropped=dropped,
        max_dets=max_dets,
        per_category=[
            {
                "id": cid,
                "name": lvis_gt.cats[cid]["name"],
                "split": groups[k],
                "frequency": lvis_gt.cats[cid]["frequency"],
                "num_gt": num_gt[cid],
                "AP": mean_precision(p, [k]),
                "AP50": mean_precision(p, [k], t50),
            }
            for k, cid in enumerate(cat_ids)
        ],
        meta=dict(meta or {}),
    )
    return EvalResult(metrics, p.copy(), np.asarray(ev.params.iou_thrs), np.asarray(ev.params.rec_thrs), cat_ids)


def _load_gt(gt: str | Path | dict):
    """An LVIS index over the checked json, checked for the federated fields too."""
    if not isinstance(gt, dict) and not Path(gt).is_file():
        raise ValueError(f"LVIS annotation file '{gt}' not found")
    data = check_eval_json(load_json(gt), "annotations" if isinstance(gt, dict) else gt)
    data = copy.deepcopy(data) if isinstance(gt, dict) else data  # LVISEval writes into the gt records
    for img in data["images"]:
        missing = [k for k in IMAGE_KEYS if k not in img]
        if missing:
            raise ValueError(f"LVIS image {img['id']} lacks {missing}; is this a COCO json? use evaluate_coco_ov")
    for ann in data["annotations"]:
        if "bbox" not in ann or "area" not in ann:
            raise ValueError(f"LVIS annotation {ann.get('id')} needs 'bbox' and 'area'")
    for cat in data["categories"]:
        if cat.get("frequency") not in ("r", "c", "f"):
            raise ValueError(f"LVIS category {cat['name']!r} needs 'frequency' r, c or f, got {cat.get('frequency')!r}")
    return lvis_from_dict(data)


@contextlib.contextmanager
def _quiet(verbose: bool):
    """The LVIS API logs a warning for every in-memory results list; mute it unless verbose."""
    logger = logging.getLogger("lvis")
    level = logger.level
    if not verbose:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)
