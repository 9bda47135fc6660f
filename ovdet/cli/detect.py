"""`ovdet detect`: free-text detection on image files, as a table, JSON and drawn PNGs."""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

from ovdet.errors import ImageLoadError, OvdetWarning

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
    p.add_argument("--negative", dest="negatives", action="append", default=[], metavar="TEXT",
                   help="a negative query; repeat for several. A box that matches a negative at least as well "
                        "as its own query is dropped (e.g. -q car --negative 'toy car')")
    p.add_argument("--exemplar", dest="exemplars", action="append", default=[], type=parse_exemplar,
                   metavar="IMAGE:x1,y1,x2,y2",
                   help="an image exemplar: the object in that box (pixels) becomes a query named 'exemplar N' "
                        "(one-shot detection); repeat for several; -q may then be left out")
    p.add_argument("--model", default=None, metavar="PATH_OR_ID",
                   help="ovdet model folder, CLIP folder or cached hub id (head untrained for a bare CLIP); "
                        "default: the embedded ShapeWorld model")
    p.add_argument("--threshold", type=float, default=0.1, help="minimum score (sigmoid) to report a detection")
    p.add_argument("--nms", type=float, default=0.5, help="IoU threshold of per-query NMS; 1 keeps all boxes")
    p.add_argument("--max-detections", type=int, default=100, help="detections kept per image")
    p.add_argument("--templates", default=None,
                   help="prompt templates: single, photo, clip7, clip80 or a .json list; default: the model's own (its config.json 'templates', else single)")
    p.add_argument("--template-mode", choices=["embed", "logit"], default="embed",
                   help="average template embeddings (CLIP) or average logits over templates (OWL-ViT)")
    p.add_argument("--batch-size", type=int, default=4, help="images per forward pass")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, or auto")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                   help="vision tower dtype; auto: bf16 where the hardware has fast bf16 GEMMs (CUDA, "
                        "AVX512-BF16/AMX CPUs) and the tower gains from it (ViT), else fp32")
    p.add_argument("--vocab-cache", type=Path, default=None, metavar="FILE",
                   help="text embeddings from `ovdet embed-vocab`; with no -q its names are the queries")
    p.add_argument("--out", type=Path, default=None, metavar="JSON", help="write results as JSON, one record per image")
    p.add_argument("--draw", type=Path, default=None, metavar="DIR", help="write PNGs with labelled boxes into DIR")
    p.set_defaults(run=run)


def parse_exemplar(value: str) -> tuple[str, tuple[float, float, float, float]]:
    """'IMAGE:x1,y1,x2,y2' -> (IMAGE, box); the image path may itself hold ':'."""
    path, sep, box = value.rpartition(":")
    try:
        coords = tuple(float(v) for v in box.split(","))
    except ValueError:
        coords = ()
    if not sep or not path or len(coords) != 4:
        raise argparse.ArgumentTypeError(
            f"bad exemplar {value!r}: expected IMAGE:x1,y1,x2,y2 with the box in pixels, e.g. scene.png:40,56,137,152"
        )
    return path, coords


def load_exemplars(exemplars: list[tuple[str, tuple]]) -> list[tuple[object, tuple]]:
    """Decode each exemplar image and check its box, before any model is loaded."""
    from ovdet.image_io import load_image, original_size
    from ovdet.models.exemplar import validate_box

    loaded = []
    for path, box in exemplars:
        image = load_image(path)
        try:
            validate_box(box, original_size(image))
        except ValueError as err:
            raise ValueError(f"--exemplar {path}:{','.join(f'{v:g}' for v in box)}: {err}") from None
        loaded.append((image, box))
    return loaded


def resolve_model(model: str | None) -> str:
    if model is not None:
        return model
    if not (DEFAULT_MODEL / "config.json").is_file():
        raise ValueError(f"no embedded default model at {DEFAULT_MODEL}; pass --model PATH_OR_ID")
    return str(DEFAULT_MODEL)


def run(args: argparse.Namespace) -> int:
    from ovdet.image_io import original_size
    from ovdet.models.text_encoder import validate_queries

    # fail fast, before loading a model; a --vocab-cache alone brings its own names
    alone = args.vocab_cache is None and not args.exemplars  # nothing else brings queries
    queries = validate_queries(args.queries) if args.queries or alone else []
    negatives = validate_queries(args.negatives) if args.negatives else []
    exemplars = load_exemplars(args.exemplars)
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    images, failed = load_images(args.images)  # a bad file is one line on stderr; the others go on
    if not images:
        write_json(args.out, [failed[i] for i in sorted(failed)])
        return 2

    import torch

    from ovdet.models.detector import Detector

    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    model_name = resolve_model(args.model)
    detector = Detector.from_pretrained(model_name).to(device)
    detector.set_precision(args.precision)
    if args.vocab_cache is not None:
        names = detector.load_vocab(args.vocab_cache)
        queries = queries or names
    if detector.untrained:
        print(f"!! {UNTRAINED_BANNER} ({model_name})", file=sys.stderr)
    nms = None if args.nms >= 1 else args.nms
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", OvdetWarning)
        results = detector.detect([im for _, im in images], queries, threshold=args.threshold, nms=nms,
                                  max_detections=args.max_detections, templates=args.templates,
                                  template_mode=args.template_mode, batch_size=args.batch_size,
                                  negatives=negatives, exemplars=exemplars)
    report_warnings(caught)
    records = {
        i: {"path": str(args.images[i]), "width": original_size(im)[0], "height": original_size(im)[1],
            "model": model_name, "untrained": detector.untrained, "detections": [d.to_dict() for d in dets]}
        for (i, im), dets in zip(images, results)
    }
    print_table([records[i] for i, _ in images])
    write_json(args.out, [records.get(i) or {**failed[i], "model": model_name} for i in range(len(args.images))])
    if args.draw:
        drawn = [in_drawn_frame(dets, im) for (_, im), dets in zip(images, results)]
        write_drawings(args.draw, [args.images[i] for i, _ in images], [im for _, im in images], drawn,
                       UNTRAINED_BANNER if detector.untrained else None)
    if failed:
        print(f"ovdet detect: {len(failed)} of {len(args.images)} images could not be read (listed above)",
              file=sys.stderr)
        return 2
    return 0


def load_images(paths: list[str]) -> tuple[list[tuple[int, object]], dict[int, dict]]:
    """Decode every image on its own: ([(index, RGB image)], {index: {"path", "error"}}).

    Each bad file and each adapted one (an animation's first frame) is one line on stderr.
    """
    from ovdet.image_io import load_image

    images, failed = [], {}
    for i, path in enumerate(paths):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", OvdetWarning)
            try:
                images.append((i, load_image(path)))
            except ImageLoadError as err:
                print(f"ovdet detect: error: {err}", file=sys.stderr)
                failed[i] = {"path": path, "error": str(err)}
        report_warnings(caught)
    return images, failed


def report_warnings(caught) -> None:
    """ovdet's own warnings as one line each on stderr; any other warning shown as Python would."""
    for w in caught:
        if issubclass(w.category, OvdetWarning):
            print(f"ovdet detect: warning: {w.message}", file=sys.stderr)
        else:
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)


def in_drawn_frame(dets, image) -> list:
    """Detections scaled from the file's pixels to the (possibly downscaled on load) image that is drawn."""
    from dataclasses import replace

    from ovdet.image_io import original_size

    scale = image.width / original_size(image)[0]
    return dets if scale == 1 else [replace(d, box=[v * scale for v in d.box]) for d in dets]


def write_json(out: Path | None, records: list[dict]) -> None:
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(records, indent=2))
        print(f"wrote {out}")


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
