"""Attribute phrases on ShapeWorld: AP50 per "<colour> <shape>" phrase, all phrases queried at once.

    python tools/attribute_ap.py MODEL VAL_DIR --out attributes.json [--shapes star,circle] \
        [--min-instances 10] [--templates clip7] [--attribute color] [--max-images N]

Two runs of `evaluate_model` (the function behind `ovdet eval`) on VAL_DIR's images: one with every
phrase of the selected shapes as the vocabulary (so "red star" competes with "blue star" on the
same box), one with the bare shape names. Prints a markdown table per phrase, the per-shape cost of
naming the colour (shape-only AP50 minus mean phrase AP50) and the colour accuracy of the top
phrase on each object's best-IoU box, by base/novel.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path


def main() -> None:
    args = _parser().parse_args()
    try:
        run(args)
    except (ValueError, OSError) as err:
        print(f"tools/attribute_ap.py: error: {err}", file=sys.stderr)
        sys.exit(2)


def run(args: argparse.Namespace) -> None:
    """Build both ground truths, run both vocabularies, print and write the report."""
    from ovdet.evaluation.attribute_phrases import attribute_confusion, build_phrase_gt, build_shape_gt, phrase_summary
    from ovdet.evaluation.evaluate import evaluate_model
    from ovdet.evaluation.predictions import load_json
    from ovdet.models.detector import Detector

    instances = _first_images(load_json(args.val / "instances.json"), args.max_images)
    shapes = [s.strip() for s in args.shapes.split(",") if s.strip()] if args.shapes else None
    phrase_gt = build_phrase_gt(instances, shapes, args.min_instances, args.attribute)
    shape_gt = build_shape_gt(instances, shapes)
    detector = Detector.from_pretrained(args.model)
    templates = detector.prompt_templates(args.templates)
    run = {"templates": templates, "workers": args.workers, "batch_size": args.batch_size, "progress": False}
    with tempfile.TemporaryDirectory() as tmp:
        preds = Path(args.predictions_dir or tmp)
        phrase = evaluate_model(detector, phrase_gt, args.val / "images", predictions=preds / "phrases.json", **run)
        shape = evaluate_model(detector, shape_gt, args.val / "images", predictions=preds / "shapes.json", **run)
        confusion = attribute_confusion(phrase_gt, load_json(preds / "phrases.json"), args.iou)
    summary = phrase_summary(phrase.metrics, shape.metrics, phrase_gt)
    report = {
        "model": str(args.model),
        "val": str(args.val),
        "num_images": len(instances["images"]),
        "templates": templates,
        "phrase_gt": phrase_gt["info"],
        "vocabulary_size": {"phrases": len(phrase_gt["categories"]), "shapes": len(shape_gt["categories"])},
        "AP50": {kind: {g: m[f"AP50_{g}"] for g in ("novel", "base", "all")}
                 for kind, m in (("phrases", phrase.metrics), ("shapes", shape.metrics))},  # fmt: skip
        **summary,
        "attribute_confusion": confusion,
    }
    print(markdown(report))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2))
        print(f"wrote {args.out}")


def markdown(report: dict) -> str:
    """The phrase table, the per-shape summary and the attribute accuracy, as markdown."""
    attr = report["phrase_gt"]["attribute"]
    lines = ["| phrase | split | instances | AP50 |", "|---|---|---|---|"]
    lines += [f"| {r['phrase']} | {r['split']} | {r['instances']} | {_f(r['AP50'])} |" for r in report["phrases"]]
    lines += ["", f"| shape | split | phrases | instances | mean phrase AP50 | shape-only AP50 | {attr} cost |",
              "|---|---|---|---|---|---|---|"]  # fmt: skip
    lines += [
        f"| {s['shape']} | {s['split']} | {s['phrases']} | {s['instances']} | {_f(s['phrase_AP50'])} "
        f"| {_f(s['shape_AP50'])} | {_signed(s['attribute_cost'])} |"
        for s in report["shapes"]
    ]
    lines += ["", "| AP50 | novel | base | all |", "|---|---|---|---|"]
    lines += [f"| {k} | " + " | ".join(_f(v[g]) for g in ("novel", "base", "all")) + " |"
              for k, v in report["AP50"].items()]  # fmt: skip
    conf = report["attribute_confusion"]
    lines += ["", f"| split | objects | localized (IoU>={conf['iou_threshold']}) | {attr} acc | shape acc | both acc |",
              "|---|---|---|---|---|---|"]  # fmt: skip
    lines += [
        f"| {s} | {c['objects']} | {c['localized']} | {_f(c['attribute_accuracy'])} | {_f(c['shape_accuracy'])} "
        f"| {_f(c['both_accuracy'])} |"
        for s, c in ((s, conf[s]) for s in ("novel", "base", "all"))
    ]
    top = ", ".join(f"{c['true']}->{c['predicted']} ({c['count']})" for c in conf["confusions"][:8])
    return "\n".join(lines + ["", f"most frequent {attr} confusions: {top or 'none'}"])


def _first_images(instances: dict, limit: int | None) -> dict:
    """The first `limit` images and their annotations (all when None)."""
    if limit is None:
        return instances
    if limit < 1:
        raise ValueError(f"--max-images must be >= 1, got {limit}")
    images = instances["images"][:limit]
    keep = {im["id"] for im in images}
    anns = [a for a in instances["annotations"] if a["image_id"] in keep]
    return {**instances, "images": images, "annotations": anns}


def _f(value) -> str:
    """A percentage; -1 (nothing to measure, pycocotools' convention) prints as n/a."""
    return "n/a" if value is None or value < -0.5 else f"{value:.1f}"


def _signed(value) -> str:
    """A difference of percentages: negative values are real (the phrases scored higher)."""
    return "n/a" if value is None else f"{value:+.1f}"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="detector folder (e.g. ovdet/assets/default_model)")
    parser.add_argument("val", type=Path, help="ShapeWorld folder with instances.json and images/")
    parser.add_argument("--out", type=Path, default=None, help="write the report as JSON")
    parser.add_argument("--shapes", default=None, help="comma-separated shape names (default: all shapes)")
    parser.add_argument("--min-instances", type=int, default=10, help="objects a phrase needs to be evaluated")
    parser.add_argument("--attribute", default="color", help="annotation attribute that prefixes the shape")
    parser.add_argument("--templates", default=None, help="prompt template set (single, clip7, ...); default: the model's own")
    parser.add_argument("--max-images", type=int, default=None, help="evaluate on the first N images only")
    parser.add_argument("--iou", type=float, default=0.5, help="IoU for an object to count as localized")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", type=int, default=1, help="DataLoader processes")
    parser.add_argument("--predictions-dir", type=Path, default=None, help="keep both runs' COCO results here")
    return parser


if __name__ == "__main__":
    main()
