"""`ovdet label`: auto-label images with free-text queries into an annotation dataset (COCO, YOLO, VOC,
Label Studio), with `ovdet detect`'s boxes."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from ovdet.cli import options
from ovdet.errors import OvdetError

EPILOG = """\
Formats (--format, repeat it to write several from one pass over the images):
  coco          DIR/instances.json: images (file_name below the images' common folder, width, height),
                categories (the queries, ids from 1), annotations (bbox [x, y, w, h] pixels, area, iscrowd 0,
                score). Trains with `ovdet train experiment=finetune_labels labels_dir=DIR images_dir=ROOT`;
                loads in pycocotools and supervision.DetectionDataset.from_coco.
  yolo          DIR/labels/NAME.txt (class cx cy w h, 0..1) and DIR/data.yaml (path, train, val, names).
                YOLO trainers look for labels/ beside images/: --out the folder that holds your images/.
  voc           DIR/Annotations/NAME.xml, Pascal VOC (1-based integer corners).
  label-studio  DIR/tasks.json: tasks with predictions (rectanglelabels, percent coordinates,
                original_width/height, score) to import as pre-annotations, and DIR/label_config.xml,
                the labelling config they fit. Images are --image-url-prefix + their path below the
                images' common folder (serve it with LOCAL_FILES_DOCUMENT_ROOT=that folder).

The boxes are `ovdet detect`'s for the same --model, --threshold, --nms, --max-detections and templates:
--agnostic-nms IOU is `ovdet detect --agnostic-nms --nms IOU`. A query's own threshold (-q car:0.3) applies
before NMS, so a box under its own threshold never suppresses another query's box; --min-box then drops
boxes smaller than that from what is left. Every file written
carries ovdet's mark; an existing file in DIR without it (yours) is refused before the model loads,
unless --overwrite.

Examples:
  ovdet label ovdet/assets/scene.png -q star -q circle -q "red circle:0.5" --format coco --out labels/
  ovdet label photos/ -q person:0.3 -q "forklift" --format yolo --format voc --out dataset/ --min-box 8
  ovdet label photos/ -q car -q truck --agnostic-nms 0.7 --format label-studio --out ls/
"""


def add_parser(sub) -> None:
    p = sub.add_parser(
        "label", help="auto-label images into a COCO / YOLO / VOC / Label Studio dataset",
        description="Label images with free-text queries and write an annotation dataset, not a results file. "
                    "Prints a summary per class (boxes, images, score min / median / max).",
        epilog=EPILOG, formatter_class=options.Formatter,
    )  # fmt: skip
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files (jpg, png, ...) or folders of them")
    p.add_argument("-q", "--query", dest="queries", action="append", default=None, metavar="NAME[:THRESHOLD]",
                   help="a query, which names its category; ':THRESHOLD' gives it its own minimum score "
                        "(e.g. -q car:0.3 -q 'red umbrella'); repeat for several")
    p.add_argument("--format", dest="formats", action="append", default=None, metavar="FORMAT",
                   help="coco, yolo, voc or label-studio (see below); repeat for several; default: coco")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="the dataset folder (made if missing)")
    options.add_model(p)
    p.add_argument("--threshold", type=float, default=None,
                   help="minimum score (0..1) of a query without its own; default: the model's own (config.json)")
    p.add_argument("--nms", type=float, default=0.5, help="IoU threshold of NMS per query; 1 keeps all boxes")
    p.add_argument("--agnostic-nms", type=float, default=None, metavar="IOU",
                   help="NMS across queries at this IoU instead of per query: one object keeps one label "
                        "(e.g. --agnostic-nms 0.7 when 'car' and 'truck' both fire on a van)")
    p.add_argument("--min-box", type=float, default=0.0, metavar="PIXELS",
                   help="drop boxes narrower or shorter than this many pixels (e.g. --min-box 8)")
    p.add_argument("--max-detections", "--max-dets", dest="max_detections", type=int, default=100,
                   help="boxes kept per image")
    options.add_templates(p)
    p.add_argument("--batch-size", type=int, default=4, help="images per forward pass")
    options.add_device(p)
    p.add_argument("--precision", choices=["auto", "fp32", "bf16", "int8"], default="auto",
                   help="vision tower dtype, as `ovdet detect --precision`")
    options.add_runtime(p)
    options.add_scoring(p)
    p.add_argument("--image-url-prefix", default="/data/local-files/?d=", metavar="URL",
                   help="label-studio: put before each image's path below the images' common folder "
                        "(e.g. https://bucket.example.com/photos/)")
    p.add_argument("--quiet", "--no-progress", dest="quiet", action="store_true",
                   help="no progress bar or summary, only errors and the files written")
    options.add_overwrite(p)
    p.set_defaults(run=run)


def check_options(args: argparse.Namespace) -> None:
    """Numeric options and templates, by the API's own rules, before the model loads."""
    from ovdet.cli.input_paths import check_templates
    from ovdet.option_values import check_iou

    options.check_values(threshold=args.threshold, nms=args.nms, max_detections=args.max_detections)
    if args.agnostic_nms is not None:
        check_iou("--agnostic-nms", args.agnostic_nms)
    if not (math.isfinite(args.min_box) and args.min_box >= 0):
        raise OvdetError(f"--min-box must be a number of pixels >= 0, e.g. 8, got {args.min_box}")
    options.check_at_least("--batch-size", args.batch_size, 1)
    check_templates(args.templates)


def run(args: argparse.Namespace) -> int:
    from ovdet.cli.detect import expand_images
    from ovdet.labelling.formats import KEYED_BY_STEM, check_formats, check_targets, write_formats
    from ovdet.labelling.label_set import check_unique_stems, images_root
    from ovdet.labelling.query_thresholds import parse_label_queries

    # everything a user can get wrong is refused here, in one line, before the model loads
    formats = check_formats(args.formats or ["coco"])
    queries = parse_label_queries(args.queries or [])
    check_options(args)
    paths = list(dict.fromkeys(expand_images(args.images)))  # an image given twice is labelled once
    root, file_names = images_root(paths)
    if any(f in KEYED_BY_STEM for f in formats):
        check_unique_stems(file_names)
    check_targets(args.out, formats, file_names, args.overwrite)

    labels, failed = label_images(args, queries, paths, root, file_names)
    print_written(write_formats(labels, args.out, formats, args.image_url_prefix), args.out, len(paths))
    if not args.quiet:
        from ovdet.labelling.summary import print_summary

        print_summary(labels)
    if failed:
        print(f"ovdet label: {failed} of {len(paths)} images could not be read (listed above); the dataset "
              "holds the others", file=sys.stderr)
        return 2
    return 0


def print_written(paths: list[Path], out: Path, num_images: int) -> None:
    """One line per file, except the per-image label files: one line per folder of them."""
    from ovdet.cli.detect import printable
    from ovdet.labelling.voc_writer import ANNOTATIONS
    from ovdet.labelling.yolo_writer import LABELS

    folders = {out / LABELS, out / ANNOTATIONS}
    for path in paths:
        if path.parent not in folders:
            print(f"wrote {printable(str(path))}")
    for folder in sorted(folders):
        count = sum(p.parent == folder for p in paths)
        if count:
            print(f"wrote {printable(str(folder))}/ ({count} files, one per image of {num_images})")


def label_images(args, queries, paths: list[str], root: Path, file_names: list[str]):
    """Run `ovdet detect`'s pipeline over the images (a progress bar on stderr) and keep each query's boxes.
    Returns the LabelSet and how many images could not be read."""
    from rich.console import Console
    from rich.progress import track

    from ovdet.assets import resolve_model
    from ovdet.cli.detect import banner, printable
    from ovdet.labelling.label_set import LabelledImage, LabelSet, keep_detections
    from ovdet.labelling.query_thresholds import resolve_thresholds
    from ovdet.models.detector import Detector
    from ovdet.pipeline import detect_stream

    model_name = resolve_model(args.model)
    detector = Detector.from_pretrained(model_name).to(options.resolve_device(args.device))
    options.apply_scoring(detector, args.scoring)
    options.apply_speed(detector, args.precision, args.runtime)
    if detector.untrained:
        print(f"!! {banner()} ({printable(model_name)}): these labels mean nothing", file=sys.stderr)
    thresholds = resolve_thresholds(queries, detector.threshold if args.threshold is None else args.threshold)
    floor = min(thresholds)
    failed: list[int] = []

    def on_error(i: int, err) -> None:
        print(f"ovdet label: error: {printable(str(err))}", file=sys.stderr)
        failed.append(i)

    agnostic = args.agnostic_nms is not None
    stream = detect_stream(detector, paths, [q.text for q in queries], threshold=floor,
                           nms=args.agnostic_nms if agnostic else args.nms, max_detections=args.max_detections,
                           templates=args.templates, template_mode=args.template_mode, batch_size=args.batch_size,
                           agnostic_nms=agnostic, on_error=on_error, query_thresholds=thresholds)
    images: dict[int, LabelledImage] = {}
    for item in track(stream, total=len(paths), description="labelling", console=Console(stderr=True),
                      disable=args.quiet, transient=True):
        width, height = item.size
        kept = keep_detections(item.detections, thresholds, floor, args.min_box)
        images[item.index] = LabelledImage(paths[item.index], file_names[item.index], width, height, kept)
    ordered = [images[i] for i in sorted(images)]
    return LabelSet([q.text for q in queries], root, ordered, model_name), len(failed)
