"""Tiny generated COCO-format datasets (coloured squares, circles, triangles) for training tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

CATEGORIES = [
    {"id": 1, "name": "square", "split": "base"},
    {"id": 2, "name": "circle", "split": "base"},
    {"id": 3, "name": "triangle", "split": "novel"},
]
COLORS = {"square": (220, 40, 40), "circle": (40, 80, 230), "triangle": (40, 190, 60)}


def write_synthetic_coco(
    folder: Path,
    num_images: int = 8,
    seed: int = 0,
    classes: tuple[str, ...] = ("square", "circle", "triangle"),
    annotate: str = "all",
    max_objects: int = 2,
    size_range: tuple[int, int] = (48, 80),
) -> Path:
    """Write `folder/images/*.png` and `folder/instances.json`; returns the json path.

    Objects are big (a third to a half of the short side) and do not overlap. With
    annotate="base" novel objects are drawn but left unannotated (the OV training protocol).
    """
    rng = np.random.default_rng(seed)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    cat_id = {c["name"]: c["id"] for c in CATEGORIES}
    split = {c["name"]: c["split"] for c in CATEGORIES}
    for i in range(num_images):
        w, h = (int(v) for v in rng.integers(*size_range, size=2))
        image = Image.new("RGB", (w, h), tuple(int(v) for v in rng.integers(150, 200, size=3)))
        draw = ImageDraw.Draw(image)
        side = min(w, h)
        count = int(rng.integers(1, max_objects + 1))
        slots = _slots(w, h, count)
        for k, (x0, y0, x1, y1) in enumerate(slots):
            name = classes[int(rng.integers(len(classes)))] if k else classes[i % len(classes)]
            size = int(rng.integers(side // 3, side // 2 + 1))
            size = min(size, x1 - x0, y1 - y0)
            bx, by = int(rng.integers(x0, x1 - size + 1)), int(rng.integers(y0, y1 - size + 1))
            _draw(draw, name, (bx, by, bx + size, by + size))
            if annotate == "base" and split[name] == "novel":
                continue
            annotations.append(
                {"id": len(annotations) + 1, "image_id": i + 1, "category_id": cat_id[name],
                 "bbox": [bx, by, size, size], "area": size * size, "iscrowd": 0}
            )
        file_name = f"{i:04d}.png"
        image.save(folder / "images" / file_name)
        images.append({"id": i + 1, "file_name": file_name, "width": w, "height": h})
    path = folder / "instances.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": CATEGORIES}))
    return path


def _slots(w: int, h: int, count: int) -> list[tuple[int, int, int, int]]:
    """Split the image into `count` side-by-side cells along its long side (objects never overlap)."""
    if w >= h:
        step = w // count
        return [(k * step, 0, (k + 1) * step, h) for k in range(count)]
    step = h // count
    return [(0, k * step, w, (k + 1) * step) for k in range(count)]


def _draw(draw: ImageDraw.ImageDraw, name: str, box: tuple[int, int, int, int]) -> None:
    x0, y0, x1, y1 = box
    color = COLORS[name]
    if name == "square":
        draw.rectangle((x0, y0, x1 - 1, y1 - 1), fill=color)
    elif name == "circle":
        draw.ellipse((x0, y0, x1 - 1, y1 - 1), fill=color)
    else:
        draw.polygon([((x0 + x1) / 2, y0), (x1 - 1, y1 - 1), (x0, y1 - 1)], fill=color)
