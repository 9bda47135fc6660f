"""Add F-VLM's trained region classifier to a one-pass detector, and choose its share on a TUNING set.

    python tools/train_region_classifier.py MODEL_DIR --annotations TRAIN.json --images TRAIN_IMAGES --out NEW_DIR \
        [--tune TUNE_DIR] [--classifier-weights 0.3 0.5 0.7] [--teacher CLIP_DIR --novel-classifier-weight 0.3 0.5 0.7]
        [--epochs 10] [--limit 3000] [--half]

MODEL_DIR is a detector with `region_scoring` (a ResNet CLIP that pools its own regions, e.g. ovdet's default
model). TRAIN.json is the COCO json the head was trained on: only the names it annotates (the base names) are
ever targets. The classifier reads the same pooled last-stage map as CLIP's attention pool and maps it into the
joint space, so it costs no extra backbone work and any name can still be asked. Region scoring then names a
box by p = p_clip^(1 - s) * p_classifier^s, with s = `classifier_weight` for the base (reference) names and
`novel_classifier_weight` (0 unless given) for the others. Trained on base names alone, the classifier pulls
novel shapes toward them; with --teacher (a CLIP folder, as `model.clip=` takes: the CLIP the tower was
distilled from) every top region, annotated or not, also learns that CLIP's embedding of its context crop
(label-free, CLIPSelf's target, weighted by --crop-weight), so a novel share above 0 can help. With --tune,
every pair of --classifier-weights and --novel-classifier-weight values is run through `evaluate_model` (what
`ovdet eval` runs) on that set and the best by the mean of AP50 novel and base is kept, and the model's `threshold` becomes that set's F1-best (as tools/tune_region_scoring.py
chooses it); never tune on the held-out set. The new folder is MODEL_DIR's detector with the classifier in it.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

from ovdet.errors import OvdetError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="one-pass detector folder (its config.json has region_scoring)")
    parser.add_argument("--annotations", type=Path, required=True, help="COCO json with the base names' boxes")
    parser.add_argument("--images", type=Path, required=True, help="folder of those images")
    parser.add_argument("--out", type=Path, required=True, help="new detector folder (an ovdet folder is replaced)")
    parser.add_argument("--tune", type=Path, default=None, help="tuning set (instances.json + images/) that chooses the share")
    parser.add_argument("--classifier-weights", type=float, nargs="+", default=[0.5],
                        help="share(s) of the classifier for base names; with --tune each is tried (default 0.5)")
    parser.add_argument("--novel-classifier-weight", type=float, nargs="+", default=[0.0],
                        help="share(s) for every other name (default 0: novel names are CLIP's alone); with --tune "
                             "each is tried")
    parser.add_argument("--teacher", type=Path, default=None,
                        help="CLIP folder whose crop embeddings every top region also learns (label-free)")
    parser.add_argument("--crop-weight", type=float, default=3.0,
                        help="weight of the teacher's 1 - cos next to the cross-entropy (default 3; needs --teacher)")
    parser.add_argument("--hidden", type=int, default=512, help="hidden width of the classifier (default 512)")
    parser.add_argument("--epochs", type=int, default=10, help="passes over the collected regions (default 10)")
    parser.add_argument("--limit", type=int, default=None, help="use the first N annotated images only")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--half", action="store_true", help="save the head and classifier in fp16 (as the default model)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def _check(args: argparse.Namespace) -> None:
    from ovdet.models.model_folder import check_model_target

    if not args.annotations.is_file():
        raise OvdetError(f"--annotations '{args.annotations}' is not a file; give the COCO json the head was trained on")
    if not args.images.is_dir():
        raise OvdetError(f"--images '{args.images}' is not a folder")
    if args.tune is not None and (not (args.tune / "instances.json").is_file() or not (args.tune / "images").is_dir()):
        raise OvdetError(f"--tune '{args.tune}' has no instances.json and images/; make one with "
                         "ovdet shapeworld --out DIR --num-images 300 --seed 2000")
    shares = [*args.classifier_weights, *args.novel_classifier_weight]
    if any(not 0 <= s <= 1 for s in shares) or args.epochs < 1 or args.hidden < 1 or args.crop_weight < 0:
        raise OvdetError(f"--classifier-weights / --novel-classifier-weight {shares} lie in [0, 1]; --epochs and "
                         f"--hidden are >= 1 (got {args.epochs}, {args.hidden}); --crop-weight >= 0 (got {args.crop_weight})")
    if args.teacher is not None and not args.teacher.is_dir():
        raise OvdetError(f"--teacher '{args.teacher}' is not a folder; give the CLIP folder the tower was distilled "
                         "from (what `ovdet train model.clip=` takes)")
    check_model_target(args.out)


def train(args: argparse.Namespace) -> dict:
    import torch

    from ovdet.evaluation.evaluate import evaluate_model
    from ovdet.models.detector import Detector
    from ovdet.training.region_classifier_fit import collect_region_maps, fit_region_classifier
    from tune_region_scoring import tuning_threshold

    detector = Detector.from_pretrained(args.model)
    detector.set_precision("fp32")
    settings = detector.region_scoring
    if settings is None or not hasattr(detector.backbone, "region_stage"):
        raise OvdetError(f"'{args.model}' scores no regions in one pass (region_scoring is null, or its tower has no "
                         "last stage to pool through); the classifier needs a ResNet CLIP detector with region_scoring")
    teacher = _teacher(args.teacher, detector) if args.teacher is not None else None
    maps, labels, names, crops = collect_region_maps(detector, args.annotations, args.images, limit=args.limit,
                                                     progress=not args.quiet, teacher=teacher)
    print(f"{len(labels)} regions ({int((labels >= 0).sum())} named) of {len(names)} names: {', '.join(names)}",
          flush=True)
    with torch.inference_mode():
        text = detector.encode_queries(names)  # [L, E] with the model's templates
    text = text.clone()  # out of inference mode: the fit's autograd keeps it
    classifier, losses = fit_region_classifier(maps, labels, text, detector.rescorer.logit_scale, args.hidden,
                                               args.epochs, seed=args.seed, progress=not args.quiet, crops=crops,
                                               crop_weight=args.crop_weight if crops is not None else 0.0)
    detector.region_classifier = classifier
    rows = []
    for share, novel in itertools.product(args.classifier_weights, args.novel_classifier_weight):
        chosen = {**settings, "classifier_hidden": args.hidden, "classifier_weight": share,
                  "novel_classifier_weight": novel}
        detector.set_region_scoring(chosen)
        if args.tune is None:
            break
        m = evaluate_model(detector, args.tune / "instances.json", args.tune / "images", nms=0.5, workers=1,
                           progress=False).metrics
        rows.append({"classifier_weight": share, "novel_classifier_weight": novel,
                     **{k: round(m[k], 2) for k in ("AP50_novel", "AP50_base", "AP50_all", "AP")}})
        print("  ".join(f"{k} {v}" for k, v in rows[-1].items()), flush=True)
    threshold = {}
    if rows:
        best = max(rows, key=lambda r: (r["AP50_novel"] + r["AP50_base"]) / 2)
        detector.set_region_scoring({**detector.region_scoring, "classifier_weight": best["classifier_weight"],
                                     "novel_classifier_weight": best["novel_classifier_weight"]})
        threshold = tuning_threshold(detector, args.tune)  # the scores moved: so does the threshold that splits them
        detector.settings.threshold = threshold["threshold"]
    info = dict(detector.info)
    info["region_classifier"] = {"model": str(args.model), "annotations": str(args.annotations), "regions": len(labels), "names": names,
                                 "epochs": args.epochs, "final_loss": round(losses[-1], 4), "tuning": rows,
                                 "teacher": str(args.teacher) if args.teacher else None,
                                 "crop_weight": args.crop_weight if args.teacher else 0.0,
                                 **threshold}
    detector.info = info
    detector.save_pretrained(args.out, dtype=torch.float16 if args.half else None)
    return {"region_scoring": detector.region_scoring, "rows": rows, "losses": losses, "threshold": detector.threshold}


def _teacher(folder: Path, detector):
    """The region view of the CLIP in `folder`, frozen, refused in one line when it does not see the detector's
    input (another resolution or normalisation would embed other crops than the ones the classifier reads)."""
    from ovdet.distill.region_tower import region_tower
    from ovdet.towers.loader import load_clip

    clip = load_clip(folder)
    theirs, mine = clip.backbone, detector.backbone
    differs = [key for key in ("image_mean", "image_std") if list(getattr(theirs, key)) != list(getattr(mine, key))]
    differs += ["crop_size"] if theirs.crop_size != mine.crop_size else []
    if differs:
        raise OvdetError(f"--teacher '{folder}' takes other inputs ({', '.join(differs)}) than the detector's tower; "
                         "give the CLIP the tower was distilled from")
    return region_tower(clip).eval().requires_grad_(False)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        _check(args)
        result = train(args)
    except OvdetError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    scoring = result["region_scoring"]
    print(f"wrote {args.out}: classifier_weight {scoring['classifier_weight']}, novel_classifier_weight "
          f"{scoring['novel_classifier_weight']}, threshold {result['threshold']} (loss {result['losses'][0]:.3f} -> "
          f"{result['losses'][-1]:.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
