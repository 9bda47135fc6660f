"""`ovdet detect`: free-text detection on image files, as a table, JSON and drawn PNGs."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

DEFAULT_MODEL = Path(__file__).resolve().parents[1] / "assets" / "default_model"
UNTRAINED_BANNER = "UNTRAINED PLUMBING MODEL: random weights, boxes are NOT detections"


def add_parser(sub) -> None:
    p = sub.add_parser(
        "detect",
        help="detect free-text queries in images",
        description="Detect objects named by free text. Prints a table per image; --out writes JSON, --draw writes PNGs.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files (jpg, png, ...)")
    p.add_argument("-q", "--query", dest="queries", action="append", default=[], metavar="TEXT",
                   help="a text query; repeat for several (e.g. -q 'red umbrella' -q forklift)")
    p.add_argument("--model", default=None, metavar="PATH_OR_ID",
                   help="ovdet model folder, CLIP folder or cached hub id (head untrained for a bare CLIP); "
                        "default: the embedded ShapeWorld model")
    p.add_argument("--threshold", type=float, default=0.1, help="minimum score (sigmoid) to report a detection")
    p.add_argument("--nms", type=float, default=0.5, help="IoU threshold of per-query NMS; 1 keeps all boxes")
    p.add_argument("--max-detections", type=int, default=100, help="detections kept per image")
    p.add_argument("--templates", default="single",
                   help="prompt templates: single, photo, clip7, clip80 or a .json list")
    p.add_argument("--template-mode", choices=["embed", "logit"], default="embed",
                   help="average template embeddings (CLIP) or average logits over templates (OWL-ViT)")
    p.add_argument("--batch-size", type=int, default=4, help="images per forward pass")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, or auto")
    p.add_argument("--out", type=Path, default=None, metavar="JSON", help="write results as JSON, one record per image")
    p.add_argument("--draw", type=Path, default=None, metavar="DIR", help="write PNGs with labelled boxes into DIR")
    p.set_defaults(run=run)


def resolve_model(model: str | None) -> str:
    if model is not None:
        return model
    if not (DEFAULT_MODEL / "config.json").is_file():
        raise ValueError(f"no embedded default model at {DEFAULT_MODEL}; pass --model PATH_OR_ID")
    return str(DEFAULT_MODEL)


def run(args: argparse.Namespace) -> int:
    from ovdet.image_io import load_image
    from ovdet.models.text_encoder import validate_queries

    queries = validate_queries(args.queries)  # fail fast, before loading a model
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    images = [load_image(path) for path in args.images]  # every image checked before any work

    import torch

    from ovdet.models.detector import Detector

    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    model_name = resolve_model(args.model)
    detector = Detector.from_pretrained(model_name).to(device)
    if detector.untrained:
        print(f"!! {UNTRAINED_BANNER} ({model_name})", file=sys.stderr)
    nms = None if args.nms >= 1 else args.nms
    results = detector.detect(images, queries, threshold=args.threshold, nms=nms, max_detections=args.max_detections,
                              templates=args.templates, template_mode=args.template_mode, batch_size=args.batch_size)
    records = [
        {"path": str(path), "width": im.width, "height": im.height, "model": model_name,
         "untrained": detector.untrained, "detections": [d.to_dict() for d in dets]}
        for path, im, dets in zip(args.images, images, results)
    ]
    print_table(records)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(records, indent=2))
        print(f"wrote {args.out}")
    if args.draw:
        write_drawings(args.draw, args.images, images, results, UNTRAINED_BANNER if detector.untrained else None)
    return 0


def print_table(records: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    for rec in records:
        title = f"{rec['path']} ({rec['width']}x{rec['height']}): {len(rec['detections'])} detections"
        if rec["untrained"]:
            title += f"  [{UNTRAINED_BANNER}]"
        table = Table(title=title, title_justify="left")
        for col in ("#", "query", "score", "x0", "y0", "x1", "y1"):
            table.add_column(col, justify="left" if col == "query" else "right")
        for i, det in enumerate(rec["detections"][:30]):
            table.add_row(str(i), det["query"], f"{det['score']:.3f}", *(f"{v:.1f}" for v in det["box"]))
        if len(rec["detections"]) > 30:
            table.add_row("…", f"{len(rec['detections']) - 30} more (see --out)", "", "", "", "", "")
        console.print(table)


def write_drawings(folder: Path, paths, images, results, banner: str | None) -> None:
    from ovdet.draw import draw_detections

    folder.mkdir(parents=True, exist_ok=True)
    used: set[str] = set()  # a.jpg and a.png in one call must not overwrite each other's drawing
    for i, (path, im, dets) in enumerate(zip(paths, images, results)):
        stem = Path(path).stem
        target = folder / (f"{stem}_{i}.png" if stem in used else f"{stem}.png")
        used.add(stem)
        draw_detections(im, dets, banner).save(target)
        print(f"wrote {target}")
