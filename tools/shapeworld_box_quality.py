"""Where a ShapeWorld detector loses AP: its boxes, or the naming of them (crops, or one-pass region pooling).

    python tools/shapeworld_box_quality.py MODEL_DIR VAL_DIR [--limit 150] [--templates clip7] [--out FILE]

For every annotated object: the best-overlapping box among the regions that crop re-scoring
sees (the `topk` most object-like), its IoU, and whether CLIP's crop embedding of that box names
the object's shape right (16-way, all names). Prints per split (base / novel):
  - median IoU of the best box, recall at IoU 0.5 and 0.75, by object size too;
  - crop shape accuracy given IoU >= 0.5, and per IoU band (how much a looser box costs);
  - the same accuracy on the ground-truth boxes themselves (CLIP's ceiling in this set).
A one-pass model (`region_scoring`) names each box as it scores: pooled from the pass's own region map, with its
trained region classifier's share where it has one ("crop" accuracy then means that naming); `--scoring crops`
measures CLIP's crops of the same boxes instead.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="trained detector folder (with crop re-scoring or region scoring)")
    parser.add_argument("val", type=Path, help="ShapeWorld folder with instances.json (all objects) and images/")
    parser.add_argument("--limit", type=int, default=150, help="first N images")
    parser.add_argument("--templates", default=None, help="prompt templates; default: the model's own")
    parser.add_argument("--out", type=Path, default=None, help="write the numbers as JSON")
    parser.add_argument("--scoring", choices=("model", "region", "crops"), default="model",
                        help="how boxes are named: as the model scores (default), pooled in one pass, or by crops")
    args = parser.parse_args()

    import torch
    from PIL import Image
    from torchvision.ops import box_convert, box_iou

    from ovdet.models.detector import Detector

    from ovdet.models.scoring_modes import apply_scoring

    detector = Detector.from_pretrained(args.model).eval()
    try:
        apply_scoring(detector, args.scoring)
    except ValueError as err:
        parser.error(str(err))
    if detector.rescorer is None:
        parser.error(f"{args.model} has no crop re-scoring or region scoring: nothing to measure")
    rescorer = detector.rescorer
    data = json.loads((args.val / "instances.json").read_text())
    cats = sorted(data["categories"], key=lambda c: c["id"])
    index = {c["id"]: i for i, c in enumerate(cats)}
    per_image = defaultdict(list)
    for ann in data["annotations"]:
        per_image[ann["image_id"]].append(ann)
    queries = detector.encode_queries([c["name"] for c in cats], args.templates).float()  # [16, E]
    # the reference names only mark which queries are base names (all 16 are asked, so none is added)
    reference = detector.encode_queries(rescorer.reference, args.templates).float() if rescorer.reference else None

    def name_boxes(pixels, boxes, region_map):  # [1, K, 4] -> [K] the name each box is given, as the model names it
        return rescorer.naming(detector.backbone, pixels, boxes, queries, reference, region_map)[0].argmax(-1)
    rows = []  # (split, size px at the input, best IoU, crop right, ground-truth crop right)
    for image in data["images"][: args.limit]:
        anns = per_image.get(image["id"], [])
        if not anns:
            continue
        pil = Image.open(args.val / "images" / image["file_name"]).convert("RGB")
        side = max(pil.size)
        pixels = detector.preprocessor([pil])  # [1, 3, S, S]
        gt = box_convert(torch.tensor([a["bbox"] for a in anns], dtype=torch.float32), "xywh", "xyxy") / side  # [G, 4]
        labels = torch.tensor([index[a["category_id"]] for a in anns])  # [G]
        with torch.inference_mode():
            out = detector(pixels, queries)
            top = out["objectness"][0].topk(min(detector.rescorer.topk, out["objectness"].shape[1])).indices
            boxes = out["pred_boxes"][0][top]  # [K, 4] cxcywh
            names = name_boxes(pixels, boxes[None], out.get("region_map"))
            gt_names = name_boxes(pixels, box_convert(gt, "xyxy", "cxcywh")[None], out.get("region_map"))
        best = box_iou(box_convert(boxes, "cxcywh", "xyxy"), gt).max(0)  # per object
        for g, label in enumerate(labels.tolist()):
            size = float((gt[g, 2:] - gt[g, :2]).prod().sqrt()) * detector.image_size
            rows.append((cats[label]["split"], size, float(best.values[g]),
                         int(names[best.indices[g]]) == label, int(gt_names[g]) == label))
    report = summarise(rows)
    for split, numbers in report.items():
        print(f"{split}: " + ", ".join(f"{k} {v}" for k, v in numbers.items()))
    if args.out:
        args.out.write_text(json.dumps({"model": str(args.model), "val": str(args.val), "images": args.limit,
                                        "templates": args.templates or detector.templates,
                                        "scoring": args.scoring, "namer": type(detector.rescorer).__name__, **report}, indent=2))


def summarise(rows: list[tuple]) -> dict:
    import numpy as np

    report = {}
    for split in ("base", "novel"):
        sel = [r for r in rows if r[0] == split]
        if not sel:
            continue
        size, iou, right, gt_right = (np.array([r[i] for r in sel]) for i in range(1, 5))
        numbers = {"objects": len(sel), "median_iou": round(float(np.median(iou)), 3),
                   "recall50": round(float((iou >= 0.5).mean()), 3), "recall75": round(float((iou >= 0.75).mean()), 3),
                   "crop_right_iou50": round(float(right[iou >= 0.5].mean()), 3) if (iou >= 0.5).any() else None,
                   "gt_crop_right": round(float(gt_right.mean()), 3)}
        for lo, hi in ((0.5, 0.6), (0.6, 0.7), (0.7, 0.8), (0.8, 1.01)):
            band = (iou >= lo) & (iou < hi)
            numbers[f"crop_right_iou{lo:.1f}"] = round(float(right[band].mean()), 3) if band.any() else None
        for lo, hi in ((0, 32), (32, 48), (48, 1e9)):
            band = (size >= lo) & (size < hi)
            numbers[f"recall75_{lo}-{hi if hi < 1e9 else 'up'}px"] = round(float((iou[band] >= 0.75).mean()), 3) if band.any() else None
        report[split] = numbers
    return report


if __name__ == "__main__":
    main()
