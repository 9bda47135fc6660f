"""`ovdet search`: rank a region index's regions for a text or image exemplar, on `ovdet detect`'s score scale."""

from __future__ import annotations

import argparse
from pathlib import Path

from ovdet.cli import options
from ovdet.cli.detect import parse_exemplar

EPILOG = """\
Scores are `ovdet detect`'s for the same queries (before its threshold), so `--threshold` means the same
in both. Hits in one image that overlap by more than --nms (same query) keep the best one, as detect does.
--out writes a JSON list of {path, box: [x0, y0, x1, y1] in the image's pixels, score, query}, best first, with
a sidecar NAME.meta.json that marks it as ovdet's; --sheet writes a PNG contact sheet of the hits.

Examples:
  ovdet index photos/ --out photos.index
  ovdet search photos.index "red umbrella" --top 20 --out hits.json --sheet hits.png
  ovdet search photos.index --exemplar photo.jpg:40,56,137,152
"""


def add_parser(sub) -> None:
    p = sub.add_parser("search", help="search a region index (ovdet index) by text or image exemplar",
                       description="Rank the indexed regions for free-text queries and/or image exemplars.",
                       epilog=EPILOG, formatter_class=options.Formatter)  # fmt: skip
    p.add_argument("index", type=Path, metavar="INDEX", help="a folder written by `ovdet index`")
    p.add_argument("queries", nargs="*", metavar="TEXT", help="text queries (several: scored together, as detect -q)")
    p.add_argument("--exemplar", dest="exemplars", action="append", default=[], type=parse_exemplar,
                   metavar="IMAGE:x1,y1,x2,y2", help="an image exemplar, as `ovdet detect --exemplar`; repeatable")
    p.add_argument("--model", default=None, metavar="PATH_OR_ID",
                   help="the model to embed queries with; default: the one the index was built with (another is refused)")
    p.add_argument("--top", type=int, default=20, metavar="K", help="hits to report")
    p.add_argument("--threshold", type=float, default=0.0, help="drop hits scoring below this (0..1)")
    p.add_argument("--nms", type=float, default=0.5, help="IoU of per-image NMS; 1 keeps all boxes")
    p.add_argument("--templates", default=None, help=options.TEMPLATES_HELP)
    options.add_device(p)
    p.add_argument("--out", type=Path, default=None, metavar="JSON", help="write the hits as a JSON list")
    p.add_argument("--sheet", type=Path, default=None, metavar="PNG", help="write a contact sheet of the hits")
    options.add_overwrite(p)
    p.add_argument("--quiet", action="store_true", help="print no table, only errors and the files written")
    p.set_defaults(run=run)


def check_args(args: argparse.Namespace) -> list[str]:
    """Every option and output path, before the index or the model loads; returns the checked texts."""
    from ovdet.cli.input_paths import check_templates
    from ovdet.file_mark import sidecar_path
    from ovdet.models.text_encoder import validate_queries
    from ovdet.option_values import check_iou, check_score
    from ovdet.safe_write import check_output_path

    queries = validate_queries(args.queries) if args.queries or not args.exemplars else []
    options.check_at_least("--top", args.top, 1)
    check_score("--threshold", args.threshold)
    check_iou("--nms", args.nms)
    check_templates(args.templates)
    inputs = [path for path, _ in args.exemplars]
    if args.out is not None:
        check_output_path(args.out, "--out", inputs=inputs, overwrite=args.overwrite)
        check_output_path(sidecar_path(args.out), "--out's sidecar", inputs=inputs, overwrite=args.overwrite)
    if args.sheet is not None:
        check_output_path(args.sheet, "--sheet", inputs=inputs, suffixes=(".png",), overwrite=args.overwrite)
    return queries


def run(args: argparse.Namespace) -> int:
    from ovdet.cli.detect import load_exemplars, printable
    from ovdet.models.detector import Detector
    from ovdet.search import region_index
    from ovdet.search.region_search import check_model, search

    queries = check_args(args)
    exemplars = load_exemplars(args.exemplars)
    index = region_index.load(args.index)
    name = args.model or index.model
    detector = Detector.from_pretrained(name).to(options.resolve_device(args.device))
    detector.eval()
    check_model(index, detector, name, args.index)
    nms = None if args.nms >= 1 else args.nms
    hits = search(detector, index, queries, exemplars, args.templates, args.top, nms, args.threshold)
    if not args.quiet:
        print_hits(hits, index)
    if args.out is not None:
        from ovdet.inference.results_file import write_list

        write_list([h.to_dict() for h in hits], args.out, {"index": str(args.index), "model": index.model}, indent=2)
        print(f"wrote {printable(str(args.out))}")
    if args.sheet is not None:
        from ovdet.file_mark import png_info
        from ovdet.safe_write import atomic_writer
        from ovdet.search.contact_sheet import contact_sheet

        with atomic_writer(args.sheet, "wb") as f:
            contact_sheet(hits).save(f, format="PNG", pnginfo=png_info())
        print(f"wrote {printable(str(args.sheet))}")
    return 0


def print_hits(hits, index) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from ovdet.cli.detect import printable

    title = f"{len(hits)} hits in {len(index.images)} images ({index.num_regions} regions)"
    table = Table(title=title, title_justify="left")
    for col in ("#", "score", "query", "image", "x0", "y0", "x1", "y1"):
        # a path is what the user came for: wrapped whole, never cut to "…"
        table.add_column(col, justify="left" if col in ("query", "image") else "right",
                         overflow="fold" if col == "image" else "ellipsis")
    for i, hit in enumerate(hits):
        table.add_row(str(i + 1), f"{hit.score:.3f}", escape(printable(hit.query)), escape(printable(hit.path)),
                      *(f"{v:.1f}" for v in hit.box))  # fmt: skip
    Console().print(table)
