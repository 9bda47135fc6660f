"""The images of a batch-inference run: listed from a COCO json or a folder, decoded in DataLoader workers.

An image that cannot be decoded does not stop the run: its item carries the error instead of
pixels, `collate_images` sets it aside, and the predict module reports it (one warning line)
while the other images go on.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import Dataset

from ovdet.errors import ImageLoadError, OvdetWarning
from ovdet.image_io import load_image
from ovdet.preprocess import ImagePreprocessor

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def images_from_coco(gt: dict, images_dir: str | Path) -> list[dict]:
    """The json's `images` entries (id, file_name, width, height), each checked to exist under `images_dir`.

    Checked here, in the main process, so that a wrong folder fails in one line before any
    model work instead of as a traceback from a DataLoader worker.
    """
    root = _folder(images_dir)
    entries = [
        {"id": img["id"], "file_name": image_file(img), "width": img.get("width"), "height": img.get("height")}
        for img in gt.get("images", [])
    ]
    if not entries:
        raise ValueError("the annotation json lists no 'images'; nothing to run the detector on")
    missing = [e["file_name"] for e in entries if not (root / e["file_name"]).is_file()]
    if missing:
        raise ValueError(
            f"{len(missing)} of {len(entries)} images of the annotation json are not under '{root}' "
            f"(first: '{missing[0]}'); pass --images the folder that holds the json's file_name paths"
        )
    return entries


def image_file(img: dict) -> str:
    """An image record's file, relative to the images folder: `file_name`, or for LVIS the last two
    parts of `coco_url` (`val2017/000000397133.jpg`)."""
    if isinstance(img.get("file_name"), str):
        return img["file_name"]
    if isinstance(img.get("coco_url"), str):
        return "/".join(img["coco_url"].split("/")[-2:])
    raise ValueError(f"image {img.get('id')!r} of the annotation json has neither 'file_name' nor 'coco_url'; "
                     "running a model needs each image's file under --images")  # fmt: skip


def images_from_folder(images_dir: str | Path) -> list[dict]:
    """A generated COCO `images` list for a plain folder: ids 1..N in sorted file-name order."""
    root = _folder(images_dir)
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found under '{root}'")
    entries = []
    for path in files:
        try:
            with Image.open(path) as im:  # reads the header only
                width, height = im.size
        except Exception as err:  # PIL raises many types on a broken file; each is one line here
            warnings.warn(f"skipped image '{path}': it cannot be decoded ({type(err).__name__}: {err})", OvdetWarning,
                          stacklevel=2)  # fmt: skip
            continue
        entries.append({"id": len(entries) + 1, "file_name": path.relative_to(root).as_posix(), "width": width,
                        "height": height})  # fmt: skip
    if not entries:
        raise ValueError(f"none of the {len(files)} images under '{root}' can be decoded")
    return entries


class ImageDataset(Dataset):
    """Decode and preprocess one image per item; runs inside DataLoader workers.

    Args:
        entries: COCO `images` entries (id, file_name, optional width/height).
        images_dir: folder that `file_name` is relative to.
        preprocessor: the detector's `ImagePreprocessor` (resize longest side, pad, normalise).
    Items:
        `pixel_values` [3, S, S]; `image_id`; `size` decoded (width, height); `target_size` the
        (width, height) boxes are reported in: the json's when given, else the decoded one.
        An image that cannot be read gives `{"image_id", "file_name", "error"}` instead.
    """

    def __init__(self, entries: Sequence[dict], images_dir: str | Path, preprocessor: ImagePreprocessor):
        self.entries = list(entries)
        self.root = Path(images_dir)
        self.preprocessor = preprocessor

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> dict:
        entry = self.entries[index]
        try:
            image = load_image(self.root / entry["file_name"])
        except ImageLoadError as err:
            return {"image_id": entry["id"], "file_name": entry["file_name"], "error": str(err)}
        size = image.size
        target = (entry.get("width") or size[0], entry.get("height") or size[1])
        return {
            "pixel_values": self.preprocessor.to_tensor(image),  # [3, S, S]
            "image_id": entry["id"],
            "size": size,
            "target_size": target,
        }


def collate_images(items: list[dict]) -> dict:
    """Stack pixels into [B, 3, S, S] (None when no image of the batch could be read); keep ids and sizes
    as lists; `failed` lists the items of images that could not be read."""
    good = [it for it in items if "error" not in it]
    return {
        "pixel_values": torch.stack([it["pixel_values"] for it in good]) if good else None,  # [B, 3, S, S]
        "image_ids": [it["image_id"] for it in good],
        "sizes": [it["size"] for it in good],
        "target_sizes": [it["target_size"] for it in good],
        "failed": [it for it in items if "error" in it],
    }


def _folder(images_dir: str | Path) -> Path:
    root = Path(images_dir)
    if not root.is_dir():
        raise ValueError(f"images folder '{root}' not found; pass --images the folder that holds the images")
    return root
