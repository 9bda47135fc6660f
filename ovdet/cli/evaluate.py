"""`ovdet eval`: run a detector over a COCO/LVIS json's images and report box AP, or score saved predictions."""

from __future__ import annotations

import argparse
import contextlib
import sys
import warnings
from pathlib import Path

from ovdet.cli import options

UNTRAINED_BANNER = "UNTRAINED PLUMBING MODEL: random head, these numbers measure nothing"
EPILOG = """\
--predictions FILE, by case:
  FILE exists, no --model: FILE is scored as saved COCO results, never written (no model runs,
                      even with --images)
  with --model, or with --images and no FILE yet: run the model (--model, default the embedded one)
                      and write its COCO results to FILE, and what produced them (model, templates,
                      scoring mode) to FILE's sidecar NAME.meta.json
  without --annotations (folder mode) run on every image under --images with --categories as the
                      vocabulary; writes FILE, NAME.images.json (generated image ids) and
                      NAME.per_image.json (detections per file); no metrics
Scoring keeps what the protocol counts: COCO the best 100 per image and category (COCOeval's maxDets),
LVIS the best 300 per image; how many detections were left out is printed.
Every file written carries ovdet's mark; an existing file without it (yours) is refused before any
work unless --overwrite is given.

Examples:
  ovdet eval --model MODEL --annotations instances_val2017.json --images val2017 --split ovcoco \\
      --out out/metrics.json --predictions out/preds.json --report out/report
  ovdet eval --annotations instances_val2017.json --predictions out/preds.json --split ovcoco
  ovdet eval --model MODEL --annotations lvis_v1_val.json --images coco --templates clip7
  ovdet eval --model MODEL --images photos/ --categories "cat,dog" --predictions out/preds.json
"""


def add_parser(sub) -> None:
    p = sub.add_parser(
        "eval",
        help="box AP on a COCO or LVIS json (open-vocabulary novel/base split)",
        description="Evaluate an open-vocabulary detector: OV-COCO AP50 novel/base/all (pycocotools) or "
        "LVIS AP/APr/APc/APf (LVIS API). All category names are queried at once (generalized setting).",
        epilog=EPILOG,
        formatter_class=options.Formatter,
    )
    p.add_argument("--model", default=None, metavar="PATH_OR_ID",
                   help="model to run (ovdet, OWL-ViT/OWLv2 or CLIP-family folder); default: the embedded ShapeWorld "
                        "model, unless --predictions names an existing file: that is scored, never replaced")
    p.add_argument("--annotations", default=None, metavar="JSON", help="COCO or LVIS annotation json")
    p.add_argument("--images", default=None, metavar="DIR", help="folder the json's file_name paths are in")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--novel", default=None, metavar="NAME,NAME", help="novel category names (the rest are base)")
    group.add_argument("--split", default=None, metavar="SPLIT",
                       help="ovcoco (48/17), lvis (rare = novel), or a .json/.yaml/.txt split file; default: "
                            "the categories' own 'split' field, for LVIS rare = novel")
    p.add_argument("--protocol", choices=["auto", "coco", "lvis"], default="auto",
                   help="auto: LVIS when the json's images carry neg_category_ids")
    p.add_argument("--vocabulary", choices=["split", "all"], default="split",
                   help="split: query only the split's novel+base names when it lists its base (OV-COCO's 65); "
                        "all: every category name of the json")
    p.add_argument("--templates", default=None,
                   help="prompt templates: single, photo, clip7, clip80 or a .json list; default: the model's own (its config.json 'templates', else single)")
    p.add_argument("--template-mode", choices=["embed", "logit"], default="embed",
                   help="average template embeddings (CLIP) or average logits over templates (OWL-ViT)")
    p.add_argument("--out", type=Path, default=None, metavar="JSON", help="write metrics.json here")
    p.add_argument("--predictions", default=None, metavar="JSON",
                   help="COCO results file: written when a model runs; an existing one without --model is scored, "
                        "never written (see below)")
    p.add_argument("--report", type=Path, default=None, metavar="DIR", help="write report.md and PNG plots into DIR")
    p.add_argument("--categories", default=None, metavar="NAMES|JSON",
                   help="folder mode only (no --annotations): vocabulary as 'a,b,c' or a json with 'categories'")
    p.add_argument("--batch-size", type=int, default=8, help="images per forward pass")
    p.add_argument("--max-dets", "--max-detections", dest="max_dets", type=int, default=300,
                   help="(box, category) pairs a model run keeps per image, ranked over all pairs")
    p.add_argument("--threshold", type=float, default=0.0, help="minimum score kept (0 keeps the full ranking for AP)")
    p.add_argument("--nms", type=float, default=0.5, metavar="IOU",
                   help="per-category NMS IoU, as ovdet detect applies it; 1 keeps every box")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, or cuda:K for one chosen GPU")
    p.add_argument("--devices", type=int, default=1, help="number of devices; >1 runs DDP (one process per GPU)")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16", "int8"], default=None,
                   help="vision tower precision (as `ovdet detect --precision`); default: fp32, the precision "
                        "results in docs/RESULTS.md are measured in")
    options.add_runtime(p)
    options.add_scoring(p)
    p.add_argument("--workers", type=int, default=2, help="DataLoader processes decoding images (0: main process)")
    p.add_argument("--no-progress", "--quiet", dest="no_progress", action="store_true", help="hide the progress bar")
    options.add_overwrite(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    with one_line_warnings():
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    from ovdet.evaluation.evaluate import evaluate_model, predict_images

    split = args.novel if args.novel is not None else args.split
    accelerator, devices = lightning_devices(args.device, args.devices)
    check_inputs(args)  # every path and value, before any model is looked for
    run_options = dict(batch_size=args.batch_size, workers=args.workers, max_dets=args.max_dets,
                       score_threshold=args.threshold, nms=args.nms, templates=args.templates,
                       template_mode=args.template_mode, accelerator=accelerator, devices=devices,
                       progress=not args.no_progress, precision=args.precision, runtime=args.runtime,
                       scoring=args.scoring)  # fmt: skip
    overwrite = bool(getattr(args, "overwrite", False))
    if scores_saved_predictions(args.model, args.predictions, args.images):
        if args.images is not None:
            print(f"ovdet eval: note: scoring the saved predictions '{args.predictions}' (--images is not used; "
                  "pass --model to run a model instead)", file=sys.stderr)  # fmt: skip
    elif args.model is None:
        from ovdet.assets import resolve_model

        args.model = resolve_model(None)  # like `ovdet detect`: the embedded model unless saved predictions are scored
    if args.annotations is None:
        return _folder_mode(args, run_options, predict_images, overwrite)
    if args.categories is not None:
        raise ValueError("--categories is for folder mode only; with --annotations the json's categories are used")
    result = evaluate_model(args.model, args.annotations, args.images, split=split, protocol=args.protocol,
                            vocabulary=args.vocabulary, predictions=args.predictions, out=args.out,
                            report=args.report, overwrite=overwrite,
                            **(run_options if args.model is not None else {}))  # fmt: skip
    if result is None:
        return 0  # a non-zero DDP rank
    print_summary(result.metrics)
    for label, path in (("predictions", args.predictions if args.model else None), ("metrics", args.out),
                        ("report", args.report)):  # fmt: skip
        if path is not None:
            print(f"wrote {label}: {path}")
    return 0


def scores_saved_predictions(model, predictions, images) -> bool:
    """No model named, and a predictions file that exists (the user's results: scored, never written) or
    no images to run a model on."""
    return model is None and predictions is not None and (images is None or Path(predictions).exists())


def check_inputs(args: argparse.Namespace) -> None:
    """Every file argument and numeric option, checked before a model is loaded (which takes seconds)."""
    from ovdet.cli import input_paths

    options.check_at_least("--batch-size", args.batch_size, 1)
    options.check_at_least("--workers", args.workers, 0)
    options.check_values(threshold=args.threshold, nms=args.nms, max_detections=args.max_dets, max_option="--max-dets")
    if args.annotations is not None:
        args.annotations = input_paths.existing_file(args.annotations, "annotation file")
    if args.images is not None:
        args.images = input_paths.existing_folder(args.images, "--images")
    if args.predictions is not None:
        args.predictions = input_paths.local_path(args.predictions, "--predictions")
    if args.categories is not None and str(args.categories).endswith(".json"):
        input_paths.existing_file(args.categories, "--categories")
    if not scores_saved_predictions(args.model, args.predictions, args.images):
        input_paths.check_templates(args.templates)
    if args.model is None and args.predictions is None and args.images is None:
        raise ValueError("give --images DIR to run a model (--model, default the embedded one), "
                         "or --predictions FILE to evaluate saved predictions")  # fmt: skip


def _folder_mode(args, run_options: dict, predict_images, overwrite: bool) -> int:
    if args.model is None or args.images is None or args.categories is None or args.predictions is None:
        raise ValueError(
            "without --annotations, give --model, --images DIR, --categories 'a,b' and --predictions FILE "
            "to run on a plain folder; to compute metrics pass --annotations JSON"
        )
    dets = predict_images(args.model, args.images, args.categories, args.predictions, overwrite=overwrite,
                          **run_options)  # fmt: skip
    if dets is not None:
        print(f"wrote {len(dets)} detections to {args.predictions} (+ .images.json, .per_image.json); "
              "no --annotations, so no metrics")  # fmt: skip
    return 0


@contextlib.contextmanager
def one_line_warnings(command: str = "eval"):
    """ovdet's warnings (a skipped image, ...) as one line each on stderr, as they happen; others as Python
    shows them."""
    from ovdet.errors import OvdetWarning

    with warnings.catch_warnings():
        warnings.simplefilter("always", OvdetWarning)
        python_show = warnings.showwarning

        def show(message, category, filename, lineno, file=None, line=None):
            if issubclass(category, OvdetWarning):
                print(f"ovdet {command}: warning: {message}", file=sys.stderr)
            else:
                python_show(message, category, filename, lineno, file, line)

        warnings.showwarning = show
        yield


def lightning_devices(device: str, count: int = 1) -> tuple[str, int | list[int]]:
    """`--device` / `--devices` -> Lightning's (accelerator, devices)."""
    if count < 1:
        raise ValueError(f"--devices must be >= 1, got {count}")
    if device in ("auto", "cpu", "cuda", "gpu"):
        return ("gpu" if device == "cuda" else device), count
    if device.startswith("cuda:") and device[5:].isdigit():
        if count != 1:
            raise ValueError(f"--device {device} picks one GPU; use --device cuda --devices {count} for several")
        return "gpu", [int(device[5:])]
    raise ValueError(f"--device must be auto, cpu, cuda or cuda:K, got {device!r}")


def print_summary(metrics: dict) -> None:
    """The setup in one line and the headline numbers as a rich table, on stdout."""
    from rich.console import Console
    from rich.table import Table

    lvis = metrics.get("protocol") == "lvis"
    keys = ("AP", "APr", "APc", "APf") if lvis else ("AP50_novel", "AP50_base", "AP50_all", "AP")
    keys += tuple(k for k in ("AP50_novel", "AP50_base", "AP50", "AP75") if k in metrics and k not in keys)
    meta = metrics.get("meta", {})
    setup = [f"{metrics.get('protocol')} protocol", f"split {metrics.get('split')}"]
    setup.append(f"{metrics.get('num_images')} images")
    if "templates" in meta:
        setup.append(f"templates {meta['templates']} ({meta.get('template_mode', 'embed')})")
    table = Table()
    table.add_column("metric")
    table.add_column("value (%)", justify="right")
    for key in keys:
        table.add_row(key, "–" if metrics[key] < 0 else f"{metrics[key]:.1f}")
    console = Console()
    console.print(" · ".join(setup), style="bold", soft_wrap=True)
    console.print(table)
    if meta.get("untrained"):
        print(f"!! {UNTRAINED_BANNER} ({meta.get('model')})", file=sys.stderr)



