"""A COCO-format detection dataset under the open-vocabulary protocol (base boxes only)."""

from __future__ import annotations

import math
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.ops import box_convert

from ovdet.data.coco_validation import load_coco
from ovdet.data.vocabulary import QuerySampler
from ovdet.evaluation.splits import Split, load_split
from ovdet.image_io import load_image

CATEGORY_SETS = ("base", "all")


@dataclass
class ImageRecord:
    """One image and its cleaned boxes (xyxy pixels, inside the image, positive size)."""

    image_id: int
    path: Path
    width: int
    height: int
    boxes: np.ndarray  # [N, 4] float32 xyxy
    names: list[str]  # [N] category names


class CocoDetection(Dataset):
    """Images with boxes of the chosen categories, and a query vocabulary per image.

    The OVR-CNN protocol: with `categories="base"` only base boxes are kept; novel objects
    stay in the pixels unannotated, and their images stay in the set. Crowd boxes are left
    out of the targets (as DETR does). Boxes that stick out of their image are clipped, and
    degenerate, malformed or outside ones dropped, with one warning that counts them. A json
    that cannot be trusted (duplicate image ids, ...) or images missing from `images` are refused
    in one ValueError (see `ovdet.data.coco_validation`).

    Args:
        annotations: COCO instances json (LVIS images without `file_name` use their `coco_url`'s
            last two parts, e.g. `train2017/000000391895.jpg`, under `images`).
        images: folder the images' `file_name` are relative to.
        transform: `ovdet.data.transforms.build_transform(...)`: (image, xyxy boxes, names) ->
            a square [3, S, S] tensor and the surviving boxes in its pixels.
        split: base/novel split for `ovdet.evaluation.splits.load_split` ("ovcoco", "lvis", a
            file, novel names); None: the categories' own `"split"` field; with neither, every
            category is base.
        base_names: the base categories by name; overrides the split's base set.
        categories: "base" (training) or "all" (base and novel: validation, with all names
            in the vocabulary, the generalized setting).
        keep_negatives: keep images left without any box. Off by default: an image whose only
            objects are novel would teach the head that they are background.
        max_queries: queries per image (positives + random negatives); None: the whole vocabulary.
        templates: prompt template set drawn from per query (training).
        min_box_size: boxes narrower or shorter than this many pixels after clipping are dropped.
        seed: seed of the vocabulary sampling and augmentation in this process (see `reseed`).
    """

    def __init__(
        self,
        annotations: str | Path,
        images: str | Path,
        transform: Callable,
        split: str | Sequence[str] | Split | None = None,
        base_names: Sequence[str] | None = None,
        categories: str = "base",
        keep_negatives: bool = False,
        max_queries: int | None = None,
        templates: str | Sequence[str] = "single",
        min_box_size: float = 1.0,
        seed: int = 0,
    ):
        if categories not in CATEGORY_SETS:
            raise ValueError(f"categories must be one of {CATEGORY_SETS}, got {categories!r}")
        annotations, images = Path(annotations), Path(images)
        if not annotations.is_file():
            raise ValueError(f"annotation file '{annotations}' not found; give a COCO instances json")
        if not images.is_dir():
            raise ValueError(f"image folder '{images}' not found; give the folder the json's file_name are relative to")
        self.coco, cleaned = load_coco(annotations)  # malformed files are refused here, in one line
        cats = sorted(self.coco.dataset.get("categories", []), key=lambda c: c["id"])
        self.split = resolve_split(cats, split, base_names)
        groups = {c["id"]: group_of(self.split, c["name"]) for c in cats}
        self.names = [c["name"] for c in cats if groups[c["id"]] == "base"]
        self.eval_names = [c["name"] for c in cats if groups[c["id"]] in ("base", "novel")]
        vocabulary = self.names if categories == "base" else self.eval_names
        self.name_to_id = {c["name"]: c["id"] for c in cats}
        self.vocabulary = QuerySampler(vocabulary, max_queries=max_queries, templates=templates)
        self.categories = categories
        self.transform = transform
        self.source = annotations
        kept = {self.name_to_id[n] for n in vocabulary}
        self.records, self.stats = self._build_records(images, kept, keep_negatives, min_box_size, cleaned)
        self.reseed(seed)

    def __len__(self) -> int:
        return len(self.records)

    def reseed(self, seed: int) -> None:
        """Give this process its own random stream; DataLoader workers call it (see the datamodule)."""
        self._rng = np.random.default_rng(seed)
        if hasattr(self.transform, "set_random_seed"):  # albumentations Compose keeps its own RNG
            self.transform.set_random_seed(seed)

    def __getitem__(self, index: int) -> dict:
        """One sample: `pixel_values` [3, S, S], `boxes_cxcywh` [N, 4] (0..1 of the square), `labels` [N]
        (index into `queries`), `queries`, `query_category_ids`, `image_id`, `orig_size` (w, h)."""
        rec = self.records[index]
        image = np.asarray(load_image(rec.path, max_side=None))  # [H, W, 3] uint8, every pixel: boxes are in them
        if image.shape[:2] != (rec.height, rec.width):
            raise ValueError(
                f"image '{rec.path}' is {image.shape[1]}x{image.shape[0]} but the json says {rec.width}x{rec.height}; "
                "fix the image record's width/height"
            )
        out = self.transform(image=image, bboxes=rec.boxes, names=rec.names)
        pixel_values = out["image"]  # [3, S, S]
        side = pixel_values.shape[-1]
        if pixel_values.shape[-2] != side:
            raise ValueError(f"the transform must return a square image, got {tuple(pixel_values.shape)}")
        boxes = torch.as_tensor(np.asarray(out["bboxes"], dtype=np.float32).reshape(-1, 4))  # [N, 4] xyxy
        queries = self.vocabulary(list(out["names"]), self._rng)
        return {
            "pixel_values": pixel_values.float(),
            "boxes_cxcywh": box_convert(boxes, "xyxy", "cxcywh") / side,  # [N, 4]
            "labels": torch.from_numpy(queries.labels),  # [N]
            "queries": queries.texts,
            "query_category_ids": [self.name_to_id[n] for n in queries.names],
            "image_id": rec.image_id,
            "orig_size": (rec.width, rec.height),
        }

    def coco_gt(self, image_ids: Sequence[int] | None = None) -> dict:
        """Ground truth for `evaluate_coco_ov`: the json's own boxes of the vocabulary's categories
        (crowd ones too: COCOeval ignores them) on these images (default: all of this dataset's)."""
        ids = set(r.image_id for r in self.records) if image_ids is None else set(image_ids)
        kept = {self.name_to_id[n] for n in self.vocabulary.names}
        data = self.coco.dataset
        return {
            "images": [im for im in data["images"] if im["id"] in ids],
            "annotations": [a for a in data["annotations"] if a["image_id"] in ids and a["category_id"] in kept],
            "categories": data["categories"],
        }

    # ---- building --------------------------------------------------------------------------
    def _build_records(self, images: Path, kept: set[int], keep_negatives: bool, min_size: float, cleaned: Counter):
        counts: Counter = Counter(cleaned)
        per_image: dict[int, tuple[list, list]] = {img_id: ([], []) for img_id in self.coco.imgs}
        sizes = {img_id: _image_size(info, images) for img_id, info in self.coco.imgs.items()}
        names = {c["id"]: c["name"] for c in self.coco.dataset.get("categories", [])}
        for ann in self.coco.dataset.get("annotations", []):
            if ann.get("category_id") not in names or ann.get("image_id") not in sizes:
                counts["unknown image or category"] += 1
                continue
            if ann["category_id"] not in kept:
                counts["other categories"] += 1  # novel in training: dropped by the protocol, not a warning
                continue
            if ann.get("iscrowd", 0):
                counts["crowd"] += 1
                continue
            box, status = clean_box(ann.get("bbox"), *sizes[ann["image_id"]], min_size)
            counts[status] += 1
            if box is not None:
                per_image[ann["image_id"]][0].append(box)
                per_image[ann["image_id"]][1].append(names[ann["category_id"]])
        records = [
            ImageRecord(
                image_id=img_id,
                path=images / _file_name(self.coco.imgs[img_id]),
                width=sizes[img_id][0],
                height=sizes[img_id][1],
                boxes=np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
                names=box_names,
            )
            for img_id, (boxes, box_names) in sorted(per_image.items())
            if boxes or keep_negatives
        ]
        if not records:
            raise ValueError(
                f"'{self.source}' has no image with a box of {self.categories} categories; "
                "check the split, or set keep_negatives=true"
            )
        missing = [r.path for r in records if not r.path.is_file()]
        if missing:  # found now, in one line, not as a crash in a DataLoader worker hours into training
            raise ValueError(
                f"{len(missing)} of {len(records)} images of '{self.source}' are not under '{images}' "
                f"(first: '{missing[0]}'); pass the folder that holds the json's file_name paths"
            )
        self._warn(counts)
        counts["images"] = len(records)
        counts["negatives"] = sum(1 for r in records if not r.names)
        return records, dict(counts)

    def _warn(self, counts: Counter) -> None:
        bad = {k: counts[k] for k in ("degenerate", "outside the image", "malformed", "unknown image or category")}
        dropped = sum(bad.values())
        if dropped or counts["clipped"] or counts["renumbered"]:
            detail = ", ".join(f"{v} {k}" for k, v in bad.items() if v)
            renumbered = f"; gave {counts['renumbered']} annotations a new unique id" if counts["renumbered"] else ""
            warnings.warn(
                f"{self.source}: clipped {counts['clipped']} boxes to their image and dropped {dropped}"
                f"{f' ({detail})' if detail else ''}{renumbered}",
                stacklevel=3,
            )


def clean_box(bbox, width: int, height: int, min_size: float = 1.0) -> tuple[list[float] | None, str]:
    """COCO xywh -> (xyxy clipped to the image, "ok" | "clipped"), or (None, why it was dropped)."""
    if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
        return None, "malformed"
    try:
        x, y, w, h = (float(v) for v in bbox)
    except (TypeError, ValueError):
        return None, "malformed"
    if not all(math.isfinite(v) for v in (x, y, w, h)):
        return None, "malformed"
    if w < min_size or h < min_size:
        return None, "degenerate"
    x0, y0, x1, y1 = max(x, 0.0), max(y, 0.0), min(x + w, float(width)), min(y + h, float(height))
    if x1 - x0 < min_size or y1 - y0 < min_size:
        return None, "outside the image"
    clipped = (x0, y0, x1, y1) != (x, y, x + w, y + h)
    return [x0, y0, x1, y1], "clipped" if clipped else "ok"


def resolve_split(categories: Sequence[dict], split, base_names: Sequence[str] | None) -> Split | None:
    """The split to train and evaluate under; `base_names` overrides the base set."""
    resolved = load_split(split, categories)
    if base_names is None:
        return resolved
    base = frozenset(str(n) for n in base_names)
    known = {c["name"] for c in categories}
    unknown = sorted(base - known)
    if unknown:
        raise ValueError(f"base_names {unknown} are not categories of the annotation json; use its exact names")
    novel = resolved.novel - base if resolved is not None else frozenset(known - base)
    return Split(name=resolved.name if resolved else "custom", novel=novel, base=base)


def group_of(split: Split | None, name: str) -> str:
    """'base', 'novel' or 'other'; without a split every category is base."""
    return split.group_of(name) if split is not None else "base"


def _file_name(info: dict) -> str:
    if "file_name" in info:
        return info["file_name"]
    if "coco_url" in info:  # LVIS: .../train2017/000000391895.jpg
        return "/".join(info["coco_url"].split("/")[-2:])
    raise ValueError(f"image record {info.get('id')} has neither 'file_name' nor 'coco_url'")


def _image_size(info: dict, images: Path) -> tuple[int, int]:
    """(width, height) from the json, or from the image file's header when the json lacks them."""
    if info.get("width") and info.get("height"):
        return int(info["width"]), int(info["height"])
    path = images / _file_name(info)
    if not path.is_file():
        raise ValueError(f"image record {info.get('id')} has no width/height and '{path}' does not exist")
    with Image.open(path) as im:
        return im.size
