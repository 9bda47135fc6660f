"""ShapeWorld ablations: how a trained detector scores (its head alone, one-pass region scoring, CLIP crop
re-scoring), on one model and optionally on the model before dense distillation.

    python tools/shapeworld_ablations.py MODEL_DIR VAL_DIR [--old-model DIR] [--out ablations.json] [--limit N]

Each row re-runs `evaluate_model` (the function behind `ovdet eval`) on VAL_DIR/instances.json with all 16
names in the vocabulary (clip7 templates, NMS 0.5 per name) and prints AP50 novel / base / all and AP.
Rows for MODEL_DIR: the head's own region embeddings (the old dense path); its region scoring as saved
(one pass); crop re-scoring (w=0.8, the previous shipped setting) in its place. With --old-model (the head
trained on the tower before distillation): the same three, so the stage's effect shows on its own.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from ovdet.errors import OvdetError

CROPS_W08 = {"topk": 32, "weight": 0.8, "context": 0.2}


def variants(detector) -> dict[str, dict]:
    """Scoring variants of one detector: name -> {"rescore", "region_scoring"} (None: off)."""
    pooled = detector.region_scoring
    reference = (pooled or detector.rescore or {}).get("reference")
    rows = {"head logits only (dense path)": {"rescore": None, "region_scoring": None}}
    if pooled is not None:
        rows["one-pass region scoring (as saved)"] = {"rescore": None, "region_scoring": pooled}
    rows["crop re-scoring w=0.8"] = {"rescore": {**CROPS_W08, "reference": reference}, "region_scoring": None}
    return rows


def _limited(annotations: Path, limit: int | None) -> Path:
    if not limit:
        return annotations
    data = json.loads(annotations.read_text())
    data["images"] = data["images"][:limit]
    keep = {im["id"] for im in data["images"]}
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] in keep]
    path = Path(tempfile.mkdtemp()) / "instances.json"
    path.write_text(json.dumps(data))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="trained detector folder")
    parser.add_argument("val", type=Path, help="ShapeWorld validation folder (instances.json + images/)")
    parser.add_argument("--old-model", default=None, help="the detector before dense distillation (same rows)")
    parser.add_argument("--out", type=Path, default=None, help="write the table as JSON (marked as ovdet's)")
    parser.add_argument("--overwrite", action="store_true", help="replace an --out that ovdet did not write")
    parser.add_argument("--limit", type=int, default=None, help="evaluate on the first N images only")
    args = parser.parse_args(argv)
    try:
        from ovdet.file_mark import check_replaceable_file

        if not (args.val / "instances.json").is_file():
            raise OvdetError(f"'{args.val}' has no instances.json; name a ShapeWorld validation folder")
        if args.out is not None:
            check_replaceable_file(args.out, "--out", args.overwrite)
    except OvdetError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    from ovdet.evaluation.evaluate import evaluate_model
    from ovdet.models.detector import Detector

    annotations = _limited(args.val / "instances.json", args.limit)
    rows = {}
    models = {"": args.model, "before distillation: ": args.old_model}
    pooled = Detector.from_pretrained(args.model).region_scoring
    for prefix, model in models.items():
        if model is None:
            continue
        detector = Detector.from_pretrained(model)
        if prefix and pooled is not None:
            detector.set_region_scoring(pooled)  # the same one-pass scoring, on the undistilled tower
        for name, variant in variants(detector).items():
            detector.set_rescore(None)
            detector.set_region_scoring(variant["region_scoring"])
            detector.set_rescore(variant["rescore"])
            metrics = evaluate_model(detector, annotations, args.val / "images", templates="clip7", nms=0.5,
                                     workers=1, progress=False).metrics
            rows[prefix + name] = {k: round(metrics[k], 1) for k in ("AP50_novel", "AP50_base", "AP50_all", "AP")}
            print(f"{prefix + name:62s} " + "  ".join(f"{k} {v:5.1f}" for k, v in rows[prefix + name].items()),
                  flush=True)
    if args.out:
        from ovdet.inference.results_file import write_object

        args.out.parent.mkdir(parents=True, exist_ok=True)
        write_object({"model": str(args.model), "old_model": args.old_model, "images": str(annotations),
                      "rows": rows}, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
