"""`ovdet detect`: free-text detection on image files or folders, as a table, JSON and drawn PNGs."""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

from ovdet.assets import DEFAULT_MODEL, resolve_model  # noqa: F401  (DEFAULT_MODEL: imported from here by tests)
from ovdet.cli import options
from ovdet.errors import OvdetWarning

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
TABLE_ROWS = 30
EPILOG = """\
Results JSON (--out): one record per image: path, width, height, model, untrained, detections, where a
detection is {box: [x0, y0, x1, y1] in the image's pixels, score, label: query index, query: its text}.
--out-format pipeline writes transformers' zero-shot-object-detection records instead
({score, label: the query text, box: {xmin, ymin, xmax, ymax}} as ints), one list per image.

Examples:
  ovdet detect photo.jpg -q "red umbrella" -q forklift --draw out/
  ovdet detect photos/ -q person --out results.json --quiet
  ovdet detect photo.jpg -q cat --model owlv2-base-patch16 --postprocess hf   # transformers' own post-processing
"""


def add_parser(sub) -> None:
    p = sub.add_parser(
        "detect", help="detect free-text queries in images",
        description="Detect objects named by free text. Prints a table per image; --out writes JSON, --draw writes PNGs.",
        epilog=EPILOG, formatter_class=options.Formatter,
    )  # fmt: skip
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files (jpg, png, ...) or folders of them")
    p.add_argument("-q", "--query", dest="queries", action="append", default=[], metavar="TEXT",
                   help="a text query; repeat for several (e.g. -q 'red umbrella' -q forklift)")
    p.add_argument("--negative", dest="negatives", action="append", default=[], metavar="TEXT",
                   help="a negative query; repeat for several. A box that matches a negative at least as well "
                        "as its own query is dropped (e.g. -q car --negative 'toy car')")
    p.add_argument("--exemplar", dest="exemplars", action="append", default=[], type=parse_exemplar,
                   metavar="IMAGE:x1,y1,x2,y2",
                   help="an image exemplar: the object in that box (pixels) becomes a query named 'exemplar N' "
                        "(one-shot detection); repeat for several; -q may then be left out")
    options.add_model(p)
    options.add_postprocess(p)
    p.add_argument("--postprocess", choices=["ovdet", "hf", "pipeline"], default="ovdet",
                   help="ovdet: every region-query pair, then NMS; hf: transformers' post_process_object_detection "
                        "(one label per region, no NMS, boxes not clipped); pipeline: as transformers' "
                        "zero-shot-object-detection pipeline (every pair, no NMS, not clipped)")
    options.add_templates(p)
    p.add_argument("--batch-size", type=int, default=4, help="images per forward pass")
    options.add_device(p)
    p.add_argument("--precision", choices=["auto", "fp32", "bf16", "int8"], default="auto",
                   help="vision tower dtype; auto: bf16 where the hardware has fast bf16 GEMMs (CUDA, "
                        "AVX512-BF16/AMX CPUs) and the tower gains from it (ViT), else fp32; int8, for CPUs "
                        "without bf16 (CPU only): a ViT's linear layers quantised dynamically, a ResNet's "
                        "convolutions statically (calibrated once on 64 fixed ShapeWorld scenes)")
    p.add_argument("--vocab-cache", type=Path, default=None, metavar="FILE",
                   help="text embeddings from `ovdet embed-vocab`; with no -q its names are the queries")
    p.add_argument("--out", type=Path, default=None, metavar="JSON", help="write results as JSON, one record per image")
    p.add_argument("--out-format", choices=["ovdet", "pipeline"], default="ovdet",
                   help="--out records: ovdet's (see below) or transformers' zero-shot-object-detection pipeline's")
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


def expand_images(items: list[str]) -> list[str]:
    """Files as given; a folder gives its image files (sorted, not recursive), as `yolo predict source=dir/`."""
    paths = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            found = sorted(str(p) for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise ValueError(f"folder '{path}' holds no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
            paths += found
        else:
            paths.append(item)
    return paths


def check_outputs(args: argparse.Namespace, images: list[str]) -> None:
    """Output paths checked before the model loads: nothing ovdet did not write is ever overwritten."""
    from ovdet.safe_write import check_output_folder, check_output_path

    if args.out is not None:
        check_output_path(args.out, "--out", inputs=[*images, *(path for path, _ in args.exemplars)])
    if args.draw is not None:
        check_output_folder(args.draw, "--draw")


def run(args: argparse.Namespace) -> int:
    from ovdet.models.text_encoder import validate_queries

    # fail fast, before loading a model; a --vocab-cache alone brings its own names
    alone = args.vocab_cache is None and not args.exemplars  # nothing else brings queries
    queries = validate_queries(args.queries) if args.queries or alone else []
    negatives = validate_queries(args.negatives) if args.negatives else []
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    options.check_postprocess(args)
    paths = expand_images(args.images)
    check_outputs(args, paths)
    exemplars = load_exemplars(args.exemplars)
    device = options.resolve_device(args.device)

    from ovdet.models.detector import Detector

    model_name = resolve_model(args.model)
    detector = Detector.from_pretrained(model_name).to(device)
    detector.set_precision(args.precision)
    if args.vocab_cache is not None:
        names = detector.load_vocab(args.vocab_cache)
        queries = queries or names
    if detector.untrained:
        print(f"!! {banner()} ({printable(model_name)})", file=sys.stderr)
    failed: dict[int, dict] = {}

    def on_error(i: int, err) -> None:
        print(f"ovdet detect: error: {printable(str(err))}", file=sys.stderr)
        failed[i] = {"path": paths[i], "error": str(err), "model": model_name}

    from ovdet.models.detection import image_record
    from ovdet.pipeline import detect_stream

    records: dict[int, dict] = {}
    pipeline: dict[int, list] = {}
    untrained_banner = banner() if detector.untrained else None
    drawings = drawing_names(args.draw, paths) if args.draw else []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", OvdetWarning)
        for item in detect_stream(detector, paths, queries, threshold=args.threshold, nms=args.nms,
                                  max_detections=args.max_detections, templates=args.templates,
                                  template_mode=args.template_mode, batch_size=args.batch_size, negatives=negatives,
                                  exemplars=exemplars, agnostic_nms=args.agnostic_nms, postprocess=args.postprocess,
                                  on_error=on_error):
            records[item.index] = image_record(paths[item.index], item.size, model_name, detector.untrained,
                                               item.detections)
            if args.out_format == "pipeline":
                pipeline[item.index] = [d.to_pipeline() for d in item.detections]
            if not args.quiet:
                print_table([records[item.index]])
            if args.draw:
                write_drawing(drawings[item.index], item.image, item.size, item.detections, untrained_banner)
            report_warnings(caught)
            caught.clear()
    report_warnings(caught)
    if args.out is not None:
        chosen = pipeline if args.out_format == "pipeline" else records
        write_json(args.out, [chosen.get(i, failed.get(i)) for i in range(len(paths))])
    if failed:
        print(f"ovdet detect: {len(failed)} of {len(paths)} images could not be read (listed above)", file=sys.stderr)
        return 2
    return 0


def banner() -> str:
    from ovdet.models.detection import UNTRAINED_BANNER

    return UNTRAINED_BANNER


def printable(text: str) -> str:
    """Text with terminal escape sequences and other control characters shown as escapes, never sent raw."""
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode() for ch in str(text))


def report_warnings(caught) -> None:
    """ovdet's own warnings as one line each on stderr; any other warning shown as Python would."""
    for w in caught:
        if issubclass(w.category, OvdetWarning):
            print(f"ovdet detect: warning: {printable(str(w.message))}", file=sys.stderr)
        else:
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)


def write_json(out: Path, data) -> None:
    from ovdet.safe_write import atomic_write_text

    atomic_write_text(out, json.dumps(data, indent=2))
    print(f"wrote {printable(str(out))}")


def print_table(records: list[dict]) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console()
    for rec in records:
        count = len(rec["detections"])
        title = f"{escape(printable(rec['path']))} ({rec['width']}x{rec['height']}): " + (
            f"{count} detections" if count else "no detections")
        if rec["untrained"]:
            title += f"  \\[{banner()}]"
        table = Table(title=title, title_justify="left")
        for col in ("#", "query", "score", "x0", "y0", "x1", "y1"):
            table.add_column(col, justify="left" if col == "query" else "right")
        for i, det in enumerate(rec["detections"][:TABLE_ROWS]):
            table.add_row(str(i), escape(printable(det["query"])), f"{det['score']:.3f}", *(f"{v:.1f}" for v in det["box"]))
        if count > TABLE_ROWS:
            table.add_row("…", f"{count - TABLE_ROWS} more (see --out)", "", "", "", "", "")
        console.print(table if count else title)


def drawing_names(folder: Path, paths: list[str]) -> list[Path]:
    """`DIR/<stem>.png` per input; `<stem>_<i>.png` when an earlier input shares the stem or the name is an
    input image itself (`--draw .` never overwrites a photo)."""
    inputs = {Path(p).resolve() for p in paths}
    seen: set[str] = set()
    names = []
    for i, path in enumerate(paths):
        stem = Path(path).stem
        target = folder / f"{stem}.png"
        names.append(folder / f"{stem}_{i}.png" if stem in seen or target.resolve() in inputs else target)
        seen.add(stem)
    return names


def write_drawing(target: Path, image, size, dets, banner_text: str | None) -> None:
    from dataclasses import replace

    from ovdet.draw import draw_detections

    target.parent.mkdir(parents=True, exist_ok=True)
    scale = image.width / size[0]  # detections are in the file's pixels; it may have loaded downscaled
    drawn = dets if scale == 1 else [replace(d, box=[v * scale for v in d.box]) for d in dets]
    draw_detections(image, drawn, banner_text).save(target)
    print(f"wrote {printable(str(target))}")
