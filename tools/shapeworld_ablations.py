"""ShapeWorld ablations on one trained detector: scoring (head vs CLIP crop re-scoring) and templates.

    python tools/shapeworld_ablations.py MODEL_DIR VAL_DIR [--out ablations.json] [--limit N]

Each row re-runs `evaluate_model` (the function behind `ovdet eval`) on VAL_DIR/instances.json with
all 16 names in the vocabulary and prints AP50 novel / base / all and AP.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

W05, W08 = {"topk": 32, "weight": 0.5, "context": 0.2}, {"topk": 32, "weight": 0.8, "context": 0.2}
VARIANTS = {  # NMS 0.5 per name unless said, as `ovdet detect` and `ovdet eval` apply it
    "head logits only, clip7": {"rescore": None, "templates": "clip7", "nms": 0.5},
    "crop re-scoring w=0.5, clip7": {"rescore": W05, "templates": "clip7", "nms": 0.5},
    "crop re-scoring w=0.8, single template": {"rescore": W08, "templates": "single", "nms": 0.5},
    "crop re-scoring w=0.8, clip7 (shipped)": {"rescore": W08, "templates": "clip7", "nms": 0.5},
    "crop re-scoring w=0.8, clip7, no NMS": {"rescore": W08, "templates": "clip7", "nms": None},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="trained detector folder")
    parser.add_argument("val", type=Path, help="ShapeWorld validation folder (instances.json + images/)")
    parser.add_argument("--out", type=Path, default=None, help="write the table as JSON")
    parser.add_argument("--limit", type=int, default=None, help="evaluate on the first N images only")
    args = parser.parse_args()

    from ovdet.evaluation.evaluate import evaluate_model
    from ovdet.models.detector import Detector

    annotations = args.val / "instances.json"
    if args.limit:
        data = json.loads(annotations.read_text())
        data["images"] = data["images"][: args.limit]
        keep = {im["id"] for im in data["images"]}
        data["annotations"] = [a for a in data["annotations"] if a["image_id"] in keep]
        annotations = Path(tempfile.mkdtemp()) / "instances.json"
        annotations.write_text(json.dumps(data))
    rows = {}
    for name, variant in VARIANTS.items():
        detector = Detector.from_pretrained(args.model)
        reference = (detector.rescore or {}).get("reference")
        detector.set_rescore(variant["rescore"] and {**variant["rescore"], "reference": reference})
        metrics = evaluate_model(detector, annotations, args.val / "images", templates=variant["templates"],
                                 nms=variant["nms"], workers=1, progress=False).metrics
        rows[name] = {k: round(metrics[k], 1) for k in ("AP50_novel", "AP50_base", "AP50_all", "AP")}
        print(f"{name:42s} " + "  ".join(f"{k} {v:5.1f}" for k, v in rows[name].items()), flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"model": str(args.model), "images": str(annotations), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
