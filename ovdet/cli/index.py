"""`ovdet index`: encode a photo collection's regions once into a region index that `ovdet search` queries."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ovdet.cli import options

EPILOG = """\
The index mirrors the PHOTOS of its latest run: a re-run on the same --out encodes only new or changed files
(size and mtime, then sha256), drops files no longer given, and prints what it did. It stores, per image, the
regions `ovdet detect` scores (the top --regions-per-image by objectness) with their embeddings, boxes in the
image's pixels and objectness, and the model's fingerprint: searching it with another model is refused.
An --out that is not empty and not an index ovdet wrote is never replaced.

Examples:
  ovdet index photos/ --out photos.index
  ovdet search photos.index "red umbrella" --top 20 --sheet hits.png
"""


def add_parser(sub) -> None:
    p = sub.add_parser("index", help="encode a photo collection's regions into a searchable index",
                       description="Encode every photo's regions once into INDEX (incremental on re-runs).",
                       epilog=EPILOG, formatter_class=options.Formatter)  # fmt: skip
    p.add_argument("photos", nargs="+", metavar="PHOTO", help="image files, or folders searched recursively")
    p.add_argument("--out", type=Path, required=True, metavar="INDEX", help="the index folder (created or updated)")
    options.add_model(p)
    p.add_argument("--regions-per-image", type=int, default=None, metavar="K",
                   help="regions stored per image, best objectness first; default: those the model scores "
                        "(its region scorer's top-K, 32 for the embedded model; else 32); each costs 4*(E+8) bytes on disk")
    p.add_argument("--batch-size", type=int, default=8, help="images per forward pass")
    p.add_argument("--workers", type=int, default=0, help="DataLoader processes that decode images (0: this one)")
    options.add_device(p)
    p.add_argument("--devices", type=int, default=1, help="number of devices; >1 runs DDP (one process per GPU)")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16", "int8"], default="auto",
                   help="vision tower dtype, as `ovdet detect --precision`")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


def list_photos(items: list[str]) -> list[str]:
    """Image files as given, folders' image files recursively (sorted); one line when none exists."""
    from ovdet.cli.detect import IMAGE_SUFFIXES
    from ovdet.cli.input_paths import existing_file_or_folder

    paths: list[str] = []
    for item in items:
        path = existing_file_or_folder(item, "photo")
        if path.is_dir():
            found = sorted(str(p) for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise ValueError(f"folder '{path}' holds no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
            paths += found
        else:
            paths.append(str(path))
    return paths


def run(args: argparse.Namespace) -> int:
    from ovdet.cli.evaluate import lightning_devices
    from ovdet.safe_write import check_replaceable
    from ovdet.search import region_index
    from ovdet.search.collection_changes import plan_changes

    options.check_at_least("--batch-size", args.batch_size, 1)
    options.check_at_least("--workers", args.workers, 0)
    if args.regions_per_image is not None:
        options.check_at_least("--regions-per-image", args.regions_per_image, 1)
    args.lightning = lightning_devices(args.device, args.devices)  # (accelerator, devices), checked now
    paths = list_photos(args.photos)
    check_replaceable(args.out.absolute(), region_index.written_by_us, region_index.KIND)  # before any slow work
    old = region_index.load(args.out) if (args.out / region_index.META).exists() else None
    changes = plan_changes(old.images if old else [], paths)
    detector, name = _load_detector(args)
    index = _matching_index(old, detector, name, args)
    new = changed = failed = 0
    if not changes.nothing_to_do or old is None:
        counts = _update(index, changes, detector, args)
        if counts is None:  # a DDP worker rank: rank 0 writes the index
            return 0
        new, changed, failed = counts
        region_index.save(index, args.out)
    print(f"indexed {new} new and {changed} changed, kept {len(changes.keep)} unchanged, dropped "
          f"{len(changes.removed)} removed; {args.out}: {len(index.images)} images, {index.num_regions} regions")
    if failed:
        print(f"ovdet index: {failed} images could not be read (listed above); a re-run tries them again",
              file=sys.stderr)
        return 2
    return 0


def _load_detector(args: argparse.Namespace):
    from ovdet.assets import resolve_model
    from ovdet.models.detector import Detector

    name = resolve_model(args.model)
    detector = Detector.from_pretrained(name).to(options.resolve_device(args.device))
    detector.set_precision(args.precision)
    detector.eval()
    return detector, name


def _matching_index(old, detector, name: str, args: argparse.Namespace):
    """The index to update: the old one when it was built with this model and K, else a new empty one."""
    from ovdet.errors import OvdetError
    from ovdet.search.region_encoder import (
        default_regions,
        model_fingerprint,
        scoring_kind,
    )
    from ovdet.search.region_index import RegionIndex
    from ovdet.search.region_search import check_model

    regions = args.regions_per_image or (old.regions_per_image if old else default_regions(detector))
    if old is None:
        return RegionIndex(name, model_fingerprint(detector), scoring_kind(detector), regions,
                           detector.text_encoder.embed_dim)  # fmt: skip
    check_model(old, detector, name, args.out)
    if regions != old.regions_per_image:
        raise OvdetError(f"index '{args.out}' holds {old.regions_per_image} regions per image, not {regions}; "
                         f"pass --regions-per-image {old.regions_per_image} or index into a new --out")  # fmt: skip
    return old


def _update(index, changes, detector, args: argparse.Namespace) -> tuple[int, int, int] | None:
    """Drop removed and changed images, encode the new and changed ones into `index`; returns how many were new,
    changed and unreadable (None on a DDP worker rank)."""
    from ovdet.search.index_predict import encode_collection

    updated = index.select(changes.keep)
    for position, kept in enumerate(changes.keep):
        if kept in changes.refreshed:
            updated.images[position] = changes.refreshed[kept]
    index.images, index.embeds, index.arrays, index.store = updated.images, updated.embeds, updated.arrays, None
    if not changes.encode:
        return 0, 0, 0
    accelerator, devices = args.lightning
    encoded = encode_collection(detector, [e["path"] for e in changes.encode], index.regions_per_image,
                                args.batch_size, args.workers, accelerator, devices, progress=not args.quiet)
    if encoded is None:
        return None
    records, skipped = encoded
    for item in skipped:
        print(f"ovdet index: error: {item['error']}", file=sys.stderr)
    index.extend([{**changes.encode[rec["id"]], "width": rec["width"], "height": rec["height"]} for rec in records],
                 [rec["embeds"] for rec in records], [rec["arrays"] for rec in records])  # fmt: skip
    changed = sum(changes.encode[rec["id"]]["path"] in changes.changed for rec in records)
    return len(records) - changed, changed, len(skipped)
