"""Open-vocabulary COCO box metrics (AP50 on novel, base and all categories) with pycocotools."""

from __future__ import annotations

import contextlib
import copy
import io
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from ovdet.data.coco_validation import check_eval_json
from ovdet.evaluation.predictions import load_json, read_predictions, warn_dropped
from ovdet.evaluation.result import EvalResult, mean_precision
from ovdet.evaluation.splits import Split, load_split


def evaluate_coco_ov(
    gt: str | Path | dict,
    predictions: str | Path | Sequence[dict],
    split: str | Path | Sequence[str] | Split | None = None,
    *,
    max_dets: int = 100,
    meta: dict | None = None,
    verbose: bool = False,
) -> dict:
    """The metrics dict of `run_coco_ov` (what metrics.json holds); see there."""
    return run_coco_ov(gt, predictions, split, max_dets=max_dets, meta=meta, verbose=verbose).metrics


def run_coco_ov(
    gt: str | Path | dict,
    predictions: str | Path | Sequence[dict],
    split: str | Path | Sequence[str] | Split | None = None,
    *,
    max_dets: int = 100,
    meta: dict | None = None,
    verbose: bool = False,
) -> EvalResult:
    """Box AP with pycocotools' COCOeval, grouped into novel / base / all by a split.

    gt: COCO annotation json (path or loaded dict; a dict is copied, never modified).
    predictions: COCO results (list or json path): image_id, category_id, bbox xywh, score; read as
        a stream, the best `max_dets` of each image and category kept (all that COCOeval counts);
        how many were left out is said as an OvdetWarning.
    split: see `load_split`; None takes `"split"` from the gt categories, else all are base.
    max_dets: detections per image and category that count (COCOeval's maxDets, 100).
    meta: what produced the predictions (templates, scoring mode, model); kept in metrics.

    One COCOeval over every gt category; the group numbers average slices of its precision
    array, which equals a COCOeval restricted to those `params.catIds` (categories are
    evaluated independently). Categories with no ground truth in these images have precision
    -1 and are left out of every mean, as pycocotools does; a group with none left is -1.
    Categories outside the split (OV-COCO's 15 unused ones) count in no headline number.
    Numbers are percent. No predictions gives 0 for every category with ground truth.
    """
    with _quiet(verbose):
        coco_gt = _load_gt(gt)
        split = load_split(split, coco_gt.dataset["categories"])
        dets, dropped = read_predictions(predictions, coco_gt.getImgIds(), coco_gt.getCatIds(), max_dets,
                                         per_category=True)  # fmt: skip
        coco_dt = coco_gt.loadRes(dets) if dets else _empty_results(coco_gt)
        ev = COCOeval(coco_gt, coco_dt, iouType="bbox")
        ev.params.maxDets = [1, 10, max_dets]
        ev.evaluate()
        ev.accumulate()
    warn_dropped(dropped, len(dets), f"COCOeval counts the best {max_dets} of each image and category")
    if verbose:
        ev.summarize()
    full = ev.eval["precision"]  # [T, R, K, A, M]
    cat_ids = [int(c) for c in ev.params.catIds]
    groups = [_group(split, coco_gt.cats[c]["name"]) for c in cat_ids]
    metrics = _headline(full, ev.params.iouThrs, groups)
    metrics.update(
        protocol="coco",
        split=split.name if split else None,
        num_images=len(ev.params.imgIds),
        num_predictions=len(dets),
        num_predictions_dropped=dropped,
        max_dets=max_dets,
        per_category=_per_category(coco_gt, full[:, :, :, 0, -1], ev.params.iouThrs, cat_ids, groups),
        meta=dict(meta or {}),
    )
    return EvalResult(
        metrics=metrics,
        precision=full[:, :, :, 0, -1].copy(),  # [T, R, K] area "all", max_dets
        iou_thrs=np.asarray(ev.params.iouThrs),
        rec_thrs=np.asarray(ev.params.recThrs),
        cat_ids=cat_ids,
    )


def _headline(full: np.ndarray, iou_thrs: np.ndarray, groups: list[str]) -> dict:
    """AP / AP50 per group and AP75, APs/m/l over all evaluated categories, in percent."""
    t50, t75 = _iou_index(iou_thrs, 0.5), _iou_index(iou_thrs, 0.75)
    idx = {g: [k for k, grp in enumerate(groups) if grp == g] for g in ("novel", "base")}
    idx["all"] = sorted(idx["novel"] + idx["base"])
    p = full[:, :, :, 0, -1]  # [T, R, K] area "all", largest max-dets
    m = {"AP": mean_precision(p, idx["all"]), "AP50": mean_precision(p, idx["all"], t50)}
    m["AP75"] = mean_precision(p, idx["all"], t75)
    for a, name in enumerate(("APs", "APm", "APl"), start=1):
        m[name] = mean_precision(full[:, :, :, a, -1], idx["all"])
    for g in ("novel", "base", "all"):
        m[f"AP_{g}"] = mean_precision(p, idx[g])
        m[f"AP50_{g}"] = mean_precision(p, idx[g], t50)
    m["num_novel"], m["num_base"] = len(idx["novel"]), len(idx["base"])
    return m


def _per_category(coco_gt: COCO, p: np.ndarray, iou_thrs, cat_ids: list[int], groups: list[str]) -> list[dict]:
    """One row per category: AP and AP50 in percent (-1: no ground truth), non-crowd gt count."""
    t50 = _iou_index(iou_thrs, 0.5)
    num_gt = Counter(a["category_id"] for a in coco_gt.dataset["annotations"] if not a["iscrowd"])
    return [
        {
            "id": cid,
            "name": coco_gt.cats[cid]["name"],
            "split": groups[k],
            "num_gt": num_gt[cid],
            "AP": mean_precision(p, [k]),
            "AP50": mean_precision(p, [k], t50),
        }
        for k, cid in enumerate(cat_ids)
    ]


def _load_gt(gt: str | Path | dict) -> COCO:
    """A COCO index over a private, checked copy; fills `iscrowd`=0 and `area`=box area when absent."""
    data = copy.deepcopy(check_eval_json(load_json(gt), "annotations" if isinstance(gt, dict) else gt))
    for ann in data["annotations"]:
        ann.setdefault("iscrowd", 0)
        ann.setdefault("area", float(ann["bbox"][2] * ann["bbox"][3]))
    coco = COCO()
    coco.dataset = data
    coco.createIndex()
    return coco


def _empty_results(coco_gt: COCO) -> COCO:
    """Results index with no detections: `COCO.loadRes([])` fails on `anns[0]`."""
    res = COCO()
    res.dataset = {"images": coco_gt.dataset["images"], "categories": coco_gt.dataset["categories"], "annotations": []}
    res.createIndex()
    return res


def _group(split: Split | None, name: str) -> str:
    return split.group_of(name) if split else "base"


def _iou_index(iou_thrs, iou: float) -> int:
    return int(np.flatnonzero(np.isclose(iou_thrs, iou))[0])


def _quiet(verbose: bool):
    """pycocotools prints progress on stdout; keep it only when asked."""
    return contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())
