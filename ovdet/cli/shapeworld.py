"""`ovdet shapeworld`: write a ShapeWorld dataset (images, COCO boxes with attributes, captions)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ovdet.cli import options

EPILOG = """Examples:
  ovdet shapeworld --out data/sw_train --num-images 20000 --seed 0 --annotate base --crops 2
  ovdet shapeworld --out data/sw_val --num-images 500 --seed 1000      # every shape boxed

The split (12 base, 4 novel shapes) is fixed: conf/shapeworld/split.yaml. Image i of seed S is
the same wherever and however often it is generated. An --out that already holds a set is refused
unless --overwrite, which removes only the files ovdet wrote there (instances.json, captions.jsonl,
crops.jsonl, images/NNNNNN.png, crops/NNNNNN_K.png) and says how many."""


def add_parser(sub) -> None:
    p = sub.add_parser(
        "shapeworld",
        help="generate a ShapeWorld dataset of coloured shapes with boxes and captions",
        description="Write OUT/images/*.png, OUT/instances.json (COCO, categories marked base/novel) "
        "and OUT/captions.jsonl; with --crops also OUT/crops/ and OUT/crops.jsonl.",
        epilog=EPILOG,
        formatter_class=options.Formatter,
    )
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="output directory (created if missing)")
    p.add_argument("--num-images", type=int, required=True, metavar="N", help="number of images")
    p.add_argument("--seed", type=int, default=0, help="dataset seed; use different seeds for train and validation")
    p.add_argument("--annotate", choices=["all", "base"], default="all",
                   help="'base': box base shapes only, novel ones stay unannotated in the pixels (training)")
    p.add_argument("--min-size", type=int, default=160, metavar="PX", help="smallest long image side")
    p.add_argument("--max-size", type=int, default=320, metavar="PX", help="largest long image side")
    p.add_argument("--min-aspect", type=float, default=0.6, metavar="RATIO", help="smallest short/long side ratio")
    p.add_argument("--min-objects", type=int, default=1, metavar="N", help="fewest shapes tried per image")
    p.add_argument("--max-objects", type=int, default=8, metavar="N", help="most shapes per image")
    p.add_argument("--min-visible", type=float, default=0.7, metavar="FRAC",
                   help="fraction of every shape that must stay unoccluded (placements hiding more are retried)")
    p.add_argument("--distractors", type=int, default=8, metavar="N", help="most distractor strokes per background")
    p.add_argument("--captions", type=int, default=5, metavar="N",
                   help="captions per image (the first names every shape)")
    p.add_argument("--crops", type=int, default=0, metavar="N",
                   help="also write up to N single-object crops per image with short phrases (CLIP pretraining)")
    p.add_argument("--workers", type=int, default=0, metavar="N", help="worker processes (0: render in this process)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a set already in --out: remove the files ovdet wrote there first (others stay)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ovdet.data.shapeworld import SceneConfig
    from ovdet.data.shapeworld_dataset import write_dataset
    from ovdet.data.shapeworld_files import describe

    config = SceneConfig(
        min_size=args.min_size,
        max_size=args.max_size,
        min_aspect=args.min_aspect,
        min_objects=args.min_objects,
        max_objects=args.max_objects,
        min_visible=args.min_visible,
        max_distractors=args.distractors,
    )
    summary = write_dataset(
        args.out,
        args.num_images,
        args.seed,
        config=config,
        annotate=args.annotate,
        captions_per_image=args.captions,
        crops_per_image=args.crops,
        workers=args.workers,
        progress=not args.quiet and sys.stdout.isatty(),  # rich leaves a blank line on a pipe or file
        overwrite=args.overwrite,
    )
    if any(summary["removed"].values()):
        print(f"removed the old set's files that ovdet wrote in {args.out} ({describe(summary['removed'])}); "
              "other files were left")
    print(
        f"wrote {summary['images']} images, {summary['annotations']} boxes ({args.annotate}), "
        f"{summary['crops']} crops to {args.out} in {summary['seconds']:.1f} s ({summary['images_per_s']} images/s)"
    )
    return 0
