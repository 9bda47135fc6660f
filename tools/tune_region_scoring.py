"""Choose a one-pass detector's region-scoring weights and score threshold on a TUNING set (never the held-out one).

    python tools/tune_region_scoring.py MODEL_DIR TUNE_DIR [--out tuning.json] [--topk 32 64] [--weights 0.3 0.5 0.7 0.9]

TUNE_DIR holds a ShapeWorld (or any COCO) set with every object annotated: instances.json and images/, e.g.
`ovdet shapeworld --out TUNE_DIR --num-images 300 --seed 2000`. Every (weight, novel_weight, topk) is run
through `evaluate_model` (what `ovdet eval` runs; all names queried, NMS 0.5) and the best by the mean of
AP50 novel and AP50 base is kept (F-VLM's geometric mean: base names weigh CLIP by `weight`, the others by
`novel_weight`). For it, the score threshold that best separates hits from misses (the F1-best threshold:
a detection is a hit when it overlaps an unmatched object of its name at IoU >= 0.5) is what the model's
`threshold` should be. The JSON (`--out`, marked as ovdet's) holds every row and the choice.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
from pathlib import Path

import torch

from ovdet.errors import OvdetError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="trained detector folder (its tower must pool regions: a ResNet CLIP)")
    parser.add_argument("tune", type=Path, help="tuning set folder: instances.json + images/ (not the held-out set)")
    parser.add_argument("--weights", type=float, nargs="+", default=[0.3, 0.5, 0.7, 0.9],
                        help="values tried for weight (base names) and novel_weight (default 0.3 0.5 0.7 0.9)")
    parser.add_argument("--topk", type=int, nargs="+", default=[32], help="regions scored per image (default 32)")
    parser.add_argument("--out", type=Path, default=None, help="write every row and the choice as JSON")
    parser.add_argument("--overwrite", action="store_true", help="replace an --out that ovdet did not write")
    return parser


def f1_threshold(detections: list[dict], annotations: dict, iou: float = 0.5) -> dict:
    """The score threshold with the best F1 over all names: {"threshold", "f1", "precision", "recall"}.

    Detections are COCO results (image_id, category_id, bbox xywh, score); a detection is a hit when it
    overlaps an object of its category not yet matched by a higher-scored detection at IoU >= `iou`.
    """
    from torchvision.ops import box_iou

    def xyxy(b):
        return [b[0], b[1], b[0] + b[2], b[1] + b[3]]

    truth: dict[tuple, list] = {}
    for a in annotations["annotations"]:
        truth.setdefault((a["image_id"], a["category_id"]), []).append(xyxy(a["bbox"]))
    total = sum(len(v) for v in truth.values())
    if total == 0:
        raise OvdetError("the tuning set has no annotated objects; name a set with every object annotated")
    ranked = sorted(detections, key=lambda d: -d["score"])
    used: dict[tuple, torch.Tensor] = {}
    hits = []
    for d in ranked:
        key = (d["image_id"], d["category_id"])
        gt = truth.get(key)
        hit = False
        if gt:
            taken = used.setdefault(key, torch.zeros(len(gt), dtype=torch.bool))
            overlaps = box_iou(torch.tensor([xyxy(d["bbox"])]), torch.tensor(gt))[0].masked_fill(taken, -1.0)
            best = int(overlaps.argmax())
            if overlaps[best] >= iou:
                taken[best], hit = True, True
        hits.append(hit)
    tp = torch.tensor(hits, dtype=torch.float64).cumsum(0)  # [N] hits among the top n
    n = torch.arange(1, len(hits) + 1, dtype=torch.float64)
    precision, recall = tp / n, tp / total
    f1 = 2 * precision * recall / (precision + recall).clamp_min(1e-12)
    best = int(f1.argmax())
    # Halfway to the next score down, so the chosen detection and everything above it pass the threshold.
    below = ranked[best + 1]["score"] if best + 1 < len(ranked) else 0.0
    return {"threshold": round((ranked[best]["score"] + below) / 2, 4), "f1": round(float(f1[best]), 4),
            "precision": round(float(precision[best]), 4), "recall": round(float(recall[best]), 4)}


def tuning_threshold(detector, tune: Path) -> dict:
    """`f1_threshold` of the detector's own detections on the tuning set `tune` (instances.json + images/), run as
    `ovdet eval` runs (NMS 0.5): what the model's `threshold` should be."""
    from ovdet.evaluation.evaluate import evaluate_model
    from ovdet.json_file import read_json_file

    annotations = tune / "instances.json"
    with tempfile.TemporaryDirectory() as tmp:
        predictions = Path(tmp) / "predictions.json"
        evaluate_model(detector, annotations, tune / "images", nms=0.5, workers=1, progress=False, predictions=predictions)
        return f1_threshold(read_json_file(predictions, error=OvdetError), read_json_file(annotations, error=OvdetError))


def tune(args: argparse.Namespace) -> dict:
    from ovdet.evaluation.evaluate import evaluate_model
    from ovdet.models.detector import Detector

    annotations, images = args.tune / "instances.json", args.tune / "images"
    detector = Detector.from_pretrained(args.model)
    base = detector.region_scoring
    if base is None:
        raise OvdetError(f"'{args.model}' has no region_scoring in its config.json; train it with "
                         "experiment=shapeworld_ovd (conf/model/shapeworld.yaml sets one)")
    rows = []
    for topk, weight, novel in itertools.product(args.topk, args.weights, args.weights):
        detector.set_region_scoring({**base, "topk": topk, "weight": weight, "novel_weight": novel})
        m = evaluate_model(detector, annotations, images, nms=0.5, workers=1, progress=False).metrics
        row = {"topk": topk, "weight": weight, "novel_weight": novel,
               **{k: round(m[k], 1) for k in ("AP50_novel", "AP50_base", "AP50_all", "AP")}}
        rows.append(row)
        print("  ".join(f"{k} {v}" for k, v in row.items()), flush=True)
    best = max(rows, key=lambda r: (r["AP50_novel"] + r["AP50_base"]) / 2)
    chosen = {**base, "topk": best["topk"], "weight": best["weight"], "novel_weight": best["novel_weight"]}
    detector.set_region_scoring(chosen)
    threshold = tuning_threshold(detector, args.tune)
    return {"model": str(args.model), "tuning_set": str(args.tune), "rows": rows, "best": best,
            "region_scoring": chosen, **threshold}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        from ovdet.file_mark import check_replaceable_file

        if not (args.tune / "instances.json").is_file() or not (args.tune / "images").is_dir():
            raise OvdetError(f"'{args.tune}' has no instances.json and images/; make one with "
                             "ovdet shapeworld --out DIR --num-images 300 --seed 2000")
        if any(not 0 <= w <= 1 for w in args.weights) or any(k < 1 for k in args.topk):
            raise OvdetError(f"--weights {args.weights} / --topk {args.topk}: weights lie in [0, 1], topk >= 1")
        if args.out is not None:
            check_replaceable_file(args.out, "--out", args.overwrite)
        result = tune(args)
    except OvdetError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"best: {result['best']}\nthreshold {result['threshold']} (F1 {result['f1']}, precision "
          f"{result['precision']}, recall {result['recall']})")
    if args.out is not None:
        from ovdet.inference.results_file import write_object

        write_object(result, args.out)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
