"""`ovdet detect`: free-text detection on image files or folders, as a table, JSON and drawn PNGs."""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path

from ovdet.assets import DEFAULT_MODEL, resolve_model  # noqa: F401  (DEFAULT_MODEL: imported from here by tests)
from ovdet.cli import options
from ovdet.errors import OvdetError, OvdetWarning
from ovdet.video.video_command import VIDEO_EPILOG, add_video_arguments

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
TABLE_ROWS = 30
EPILOG = """\
Results JSON (--out): one record per image: path, width, height, model, untrained, detections, where a
detection is {box: [x0, y0, x1, y1] in the image's pixels, score, label: query index, query: its text}.
--out-format pipeline writes transformers' zero-shot-object-detection records instead
({score, label: the query text, box: {xmin, ymin, xmax, ymax}} as ints): for image files, one list per
image in the order given, as transformers' pipeline returns them; when a folder is given, one
{path, detections: [records]} per image, since a folder's order is not the user's.
--out writes its list and a sidecar NAME.meta.json that marks it as ovdet's; --draw writes PNGs
marked the same way. An existing file without ovdet's mark (yours) is refused before the model
loads, unless --overwrite is given. Image paths are local files: URLs are not read.

Examples:
  ovdet detect photo.jpg -q "red umbrella" -q forklift --draw out/
  ovdet detect photos/ -q person --out results.json --quiet
  ovdet detect photo.jpg -q cat --model owlv2-base-patch16 --postprocess hf   # transformers' own post-processing
"""


def add_parser(sub) -> None:
    p = sub.add_parser(
        "detect", help="detect free-text queries in images",
        description="Detect objects named by free text. Prints a table per image; --out writes JSON, --draw writes PNGs.",
        epilog=EPILOG + VIDEO_EPILOG, formatter_class=options.Formatter,
    )  # fmt: skip
    p.add_argument("images", nargs="*", metavar="IMAGE",
                   help="image files (jpg, png, ...) or folders of them, or one video file (mp4, mkv, mov, webm, avi)")
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
    options.add_runtime(p)
    options.add_scoring(p)
    p.add_argument("--vocab-cache", type=Path, default=None, metavar="FILE",
                   help="text embeddings from `ovdet embed-vocab`; with no -q its names are the queries")
    p.add_argument("--out", type=Path, default=None, metavar="JSON", help="write results as JSON, one record per image")
    p.add_argument("--out-format", choices=["ovdet", "pipeline"], default="ovdet",
                   help="--out records: ovdet's (see below) or transformers' zero-shot-object-detection pipeline's")
    p.add_argument("--draw", type=Path, default=None, metavar="DIR", help="write PNGs with labelled boxes into DIR")
    options.add_overwrite(p)
    add_video_arguments(p)
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
    """Files as given; a folder gives its image files (sorted, not recursive), as `yolo predict source=dir/`.

    Checked before any model loads: a URL is refused, and so is a run none of whose images exist; in a
    batch with some good files a missing one stays, to be reported in its place as a bad file is."""
    from ovdet.cli.input_paths import existing_file_or_folder, local_path

    paths = []
    for item in items:
        path = local_path(item, "image")
        if path.is_dir():
            found = sorted(str(p) for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise ValueError(f"folder '{path}' holds no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
            paths += found
        else:
            paths.append(item)
    if not any(os.path.lexists(p) for p in paths):
        existing_file_or_folder(paths[0], "image")  # nothing to detect on: one line before the model loads
    return paths


def check_outputs(args: argparse.Namespace, images: list[str]) -> list[Path]:
    """Output paths checked before the model loads: an input, or a file ovdet did not write, is never
    overwritten (unless --overwrite). Returns the drawing of each image (none without --draw)."""
    from ovdet.file_mark import check_replaceable_file, sidecar_path
    from ovdet.safe_write import check_output_folder, check_output_path

    overwrite = bool(getattr(args, "overwrite", False))
    inputs = [*images, *(path for path, _ in args.exemplars), args.vocab_cache]
    if args.out is not None:
        check_output_path(args.out, "--out", inputs=inputs, overwrite=overwrite)
        check_output_path(sidecar_path(args.out), "--out's sidecar", inputs=inputs, overwrite=overwrite)
    if args.draw is None:
        return []
    check_output_folder(args.draw, "--draw")
    drawings = drawing_names(args.draw, images)
    for target in drawings:
        check_replaceable_file(target, "--draw", overwrite)
    return drawings


def check_inputs(args: argparse.Namespace) -> None:
    """Option values and input files other than the images, before the model loads."""
    from ovdet.cli.input_paths import check_templates, existing_file

    options.check_at_least("--batch-size", args.batch_size, 1)
    options.check_postprocess(args)
    for path, _ in args.exemplars:
        existing_file(path, "--exemplar image")
    if args.vocab_cache is not None:
        args.vocab_cache = existing_file(args.vocab_cache, "--vocab-cache")
    check_templates(args.templates)


def run(args: argparse.Namespace) -> int:
    from ovdet.video.video_command import is_video_run, run_video

    if is_video_run(args):
        return run_video(args)
    if not args.images:
        raise OvdetError("ovdet detect needs an image, a folder, one video or --webcam")
    from ovdet.text.queries import validate_queries

    # fail fast, before loading a model; a --vocab-cache alone brings its own names
    alone = args.vocab_cache is None and not args.exemplars  # nothing else brings queries
    queries = validate_queries(args.queries) if args.queries or alone else []
    negatives = validate_queries(args.negatives) if args.negatives else []
    check_inputs(args)
    paths = expand_images(args.images)
    drawings = check_outputs(args, paths)
    exemplars = load_exemplars(args.exemplars)
    device = options.resolve_device(args.device)
    per_path = args.out_format == "pipeline" and any(Path(item).is_dir() for item in args.images)

    from ovdet.models.detector import Detector

    model_name = resolve_model(args.model)
    detector = Detector.from_pretrained(model_name).to(device)
    options.apply_scoring(detector, args.scoring)
    options.apply_speed(detector, args.precision, args.runtime)
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
                converted = [d.to_pipeline() for d in item.detections]
                pipeline[item.index] = {"path": paths[item.index], "detections": converted} if per_path else converted
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


def write_json(out: Path, data: list) -> None:
    """The results list, and its sidecar NAME.meta.json with ovdet's mark (the list stays as users expect it)."""
    from ovdet.inference.results_file import write_list

    write_list(data, out, indent=2)
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

    from ovdet.file_mark import png_info
    from ovdet.safe_write import atomic_writer

    scale = image.width / size[0]  # detections are in the file's pixels; it may have loaded downscaled
    drawn = dets if scale == 1 else [replace(d, box=[v * scale for v in d.box]) for d in dets]
    with atomic_writer(target, "wb") as f:
        draw_detections(image, drawn, banner_text).save(f, format="PNG", pnginfo=png_info())
    print(f"wrote {printable(str(target))}")
