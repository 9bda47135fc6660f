"""Attribute-phrase evaluation ("red star" vs "blue star"): phrase ground truth and attribute confusion.

ShapeWorld annotations carry `attributes` ({color, size, style}) next to the shape category. Turning
every object into the category "<attribute> <shape>" gives a COCO json whose AP measures whether
the detector tells colours apart, not only shapes, with all phrases queried at once so that
"red star" and "blue star" compete for the same box. Everything here is pure json in, json out;
the AP itself comes from `ovdet.evaluation.coco_ov` like every other number of the project.
"""

from __future__ import annotations

import copy
from collections import Counter, defaultdict
from collections.abc import Sequence

import numpy as np
from pycocotools import mask as mask_utils

SPLITS = ("base", "novel")


def phrase_of(value: str, shape: str) -> str:
    """The query text of one (attribute value, shape) pair: 'red' + 'star' -> 'red star'."""
    return f"{value} {shape}"


def select_shapes(categories: Sequence[dict], shapes: Sequence[str] | None = None) -> list[dict]:
    """The shape categories to evaluate, in the json's order; None selects all of them."""
    if shapes is None:
        return list(categories)
    known = {c["name"] for c in categories}
    unknown = [s for s in shapes if s not in known]
    if unknown or not shapes:
        raise ValueError(f"unknown shapes {unknown or list(shapes)}; choose from {sorted(known)}")
    wanted = set(shapes)
    return [c for c in categories if c["name"] in wanted]


def build_shape_gt(instances: dict, shapes: Sequence[str] | None = None) -> dict:
    """The instances restricted to the selected shapes (all images kept, so false positives still count)."""
    cats = select_shapes(instances["categories"], shapes)
    ids = {c["id"] for c in cats}
    return {
        "info": {**instances.get("info", {}), "shapes": [c["name"] for c in cats]},
        "images": copy.deepcopy(instances["images"]),
        "annotations": [copy.deepcopy(a) for a in instances["annotations"] if a["category_id"] in ids],
        "categories": copy.deepcopy(cats),
    }


def build_phrase_gt(
    instances: dict, shapes: Sequence[str] | None = None, min_instances: int = 10, attribute: str = "color"
) -> dict:
    """A COCO json with one category per "<attribute value> <shape>" phrase.

    instances: COCO json whose annotations carry `attributes` (ShapeWorld's instances.json).
    shapes: shape names to keep (None: all); min_instances: a phrase needs that many objects to
    become a category (fewer give no stable AP). Every object of a kept phrase is annotated under
    its own phrase; objects of dropped phrases leave the json, and `info` counts them.

    Categories: id 1..K, `name` (the phrase), `shape`, `attribute` (its value), `supercategory`
    (the shape) and the shape's own `split` when it has one. Images are all kept.
    """
    if min_instances < 1:
        raise ValueError(f"min_instances must be >= 1, got {min_instances}")
    cats = select_shapes(instances["categories"], shapes)
    shape_of = {c["id"]: c for c in cats}
    values = {a["id"]: _attribute(a, attribute) for a in instances["annotations"] if a["category_id"] in shape_of}
    counts = Counter(
        (a["category_id"], values[a["id"]]) for a in instances["annotations"] if a["category_id"] in shape_of
    )
    kept = sorted((k for k, n in counts.items() if n >= min_instances), key=lambda k: (_order(cats, k[0]), k[1]))
    if not kept:
        raise ValueError(
            f"no '{attribute}' phrase of shapes {[c['name'] for c in cats]} has {min_instances} objects "
            f"(most: {max(counts.values(), default=0)}); lower --min-instances or use more images"
        )
    new_id = {key: i for i, key in enumerate(kept, start=1)}
    categories = [_phrase_category(new_id[(cid, value)], shape_of[cid], value) for cid, value in kept]
    annotations = [
        {**copy.deepcopy(a), "category_id": new_id[(a["category_id"], values[a["id"]])]}
        for a in instances["annotations"]
        if (a["category_id"], values.get(a["id"])) in new_id
    ]
    dropped = {phrase_of(v, shape_of[cid]["name"]): n for (cid, v), n in counts.items() if (cid, v) not in new_id}
    info = {
        "attribute": attribute,
        "min_instances": min_instances,
        "shapes": [c["name"] for c in cats],
        "dropped_phrases": dict(sorted(dropped.items())),
        "dropped_objects": sum(dropped.values()),
    }
    return {"info": info, "images": copy.deepcopy(instances["images"]), "annotations": annotations,
            "categories": categories}  # fmt: skip


def attribute_confusion(phrase_gt: dict, records: Sequence[dict], iou_threshold: float = 0.5) -> dict:
    """Per ground-truth object: does the best-scoring phrase on its best-IoU detected box name the right attribute?

    records: COCO results of a run whose vocabulary was the phrase categories; several records
    with the same image and bbox are one box scored for several phrases. An object is localized
    when its best-IoU box reaches `iou_threshold`; accuracies (percent, -1 with nothing localized)
    are over localized objects. Returns {split: counts and accuracies} for "base", "novel", "all",
    and `confusions`: how often a true value was read as another one, most frequent first.
    """
    cats = {c["id"]: c for c in phrase_gt["categories"]}
    boxes = _boxes_by_image(records)
    tally = {s: Counter() for s in (*SPLITS, "all")}
    confusions: Counter = Counter()
    for image_id, gts in _gt_by_image(phrase_gt).items():
        found = _best_phrases(gts, boxes.get(image_id), iou_threshold)
        for gt, top in zip(gts, found):
            truth = cats[gt["category_id"]]
            row = {"objects": 1, "localized": top is not None}
            if top is not None:
                pred = cats[top]
                row["attribute_ok"] = pred["attribute"] == truth["attribute"]
                row["shape_ok"] = pred["shape"] == truth["shape"]
                row["both_ok"] = row["attribute_ok"] and row["shape_ok"]
                if not row["attribute_ok"]:
                    confusions[(truth["attribute"], pred["attribute"])] += 1
            for split in {truth.get("split", "base"), "all"}:
                tally[split].update({k: int(v) for k, v in row.items()})
    out = {split: _accuracies(t) for split, t in tally.items()}
    out["confusions"] = [{"true": t, "predicted": p, "count": n} for (t, p), n in confusions.most_common()]
    out["iou_threshold"] = iou_threshold
    return out


def phrase_summary(phrase_metrics: dict, shape_metrics: dict, phrase_gt: dict) -> dict:
    """Rows per phrase (AP50 of the phrase run) and per shape (mean phrase AP50 vs shape-only AP50).

    phrase_metrics / shape_metrics: `run_coco_ov` metrics of the phrase and the shape-name runs.
    `attribute_cost` of a shape is its shape-only AP50 minus the mean AP50 of its phrases.
    """
    cats = {c["id"]: c for c in phrase_gt["categories"]}
    rows = [
        {"phrase": r["name"], "shape": cats[r["id"]]["shape"], "attribute": cats[r["id"]]["attribute"],
         "split": r["split"], "instances": r["num_gt"], "AP50": r["AP50"], "AP": r["AP"]}  # fmt: skip
        for r in phrase_metrics["per_category"]
    ]
    shape_ap = {r["name"]: r for r in shape_metrics["per_category"]}
    by_shape = defaultdict(list)
    for row in rows:
        by_shape[row["shape"]].append(row)
    shapes = []
    for name, group in by_shape.items():
        scored = [r["AP50"] for r in group if r["AP50"] > -1]
        mean = float(np.mean(scored)) if scored else -1.0
        only = shape_ap[name]["AP50"] if name in shape_ap else -1.0
        cost = only - mean if min(only, mean) > -1 else None
        shapes.append({"shape": name, "split": group[0]["split"], "phrases": len(group),
                       "instances": sum(r["instances"] for r in group), "phrase_AP50": mean,
                       "shape_AP50": only, "attribute_cost": cost})  # fmt: skip
    return {"phrases": rows, "shapes": shapes}


def _attribute(ann: dict, attribute: str) -> str:
    value = ann.get("attributes", {}).get(attribute)
    if value is None:
        raise ValueError(
            f"annotation {ann.get('id')} has no attributes['{attribute}']; phrase evaluation needs "
            "ShapeWorld-style annotations (ovdet shapeworld writes them) or another --attribute"
        )
    return str(value)


def _order(cats: list[dict], cat_id: int) -> int:
    return next(i for i, c in enumerate(cats) if c["id"] == cat_id)


def _phrase_category(new_id: int, shape: dict, value: str) -> dict:
    cat = {"id": new_id, "name": phrase_of(value, shape["name"]), "supercategory": shape["name"],
           "shape": shape["name"], "attribute": value}  # fmt: skip
    if "split" in shape:
        cat["split"] = shape["split"]
    return cat


def _gt_by_image(gt: dict) -> dict[int, list[dict]]:
    out = defaultdict(list)
    for ann in gt["annotations"]:
        if not ann.get("iscrowd", 0):
            out[ann["image_id"]].append(ann)
    return out


def _boxes_by_image(records: Sequence[dict]) -> dict[int, tuple[np.ndarray, list[int]]]:
    """Per image: distinct boxes [D, 4] xywh and the category of each box's best-scoring record."""
    best: dict[int, dict[tuple, tuple[float, int]]] = defaultdict(dict)
    for rec in records:
        key, seen = tuple(rec["bbox"]), best[rec["image_id"]]
        if key not in seen or rec["score"] > seen[key][0]:
            seen[key] = (rec["score"], rec["category_id"])
    return {
        img: (np.asarray(list(seen), dtype=np.float64).reshape(-1, 4), [c for _, c in seen.values()])
        for img, seen in best.items()
    }


def _best_phrases(gts: list[dict], boxes, iou_threshold: float) -> list[int | None]:
    """The top phrase id on each object's best-IoU box, or None when no box reaches the threshold."""
    if boxes is None or not len(boxes[1]):
        return [None] * len(gts)
    det_xywh, det_cat = boxes
    gt_xywh = np.asarray([g["bbox"] for g in gts], dtype=np.float64)  # [G, 4]
    iou = np.asarray(mask_utils.iou(det_xywh, gt_xywh, [0] * len(gts)))  # [D, G]
    best = iou.argmax(axis=0)  # [G]
    return [det_cat[d] if iou[d, g] >= iou_threshold else None for g, d in enumerate(best)]


def _accuracies(t: Counter) -> dict:
    loc = t["localized"]

    def pct(key: str) -> float:
        return 100.0 * t[key] / loc if loc else -1.0

    return {"objects": t["objects"], "localized": loc, "attribute_accuracy": pct("attribute_ok"),
            "shape_accuracy": pct("shape_ok"), "both_accuracy": pct("both_ok")}  # fmt: skip
