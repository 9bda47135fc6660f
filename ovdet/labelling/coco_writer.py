"""COCO instances json (`DIR/instances.json`): loads in pycocotools, supervision and `ovdet train`."""

from __future__ import annotations

import json
from pathlib import Path

from ovdet import file_mark
from ovdet.labelling.label_set import LabelSet
from ovdet.safe_write import atomic_write_text

FILE = "instances.json"


def targets(out: Path, file_names: list[str]) -> list[Path]:
    return [out / FILE]


def ours(out: Path):
    """The check that a target is ovdet's own: a JSON object with the `written_by` key."""
    return file_mark.is_ours


def coco_dict(labels: LabelSet) -> dict:
    """The dataset as COCO: ids from 1, `bbox` [x, y, w, h] pixels, the detection's `score` kept."""
    images, annotations = [], []
    for image_id, image in enumerate(labels.images, start=1):
        images.append({"id": image_id, "file_name": image.file_name, "width": image.width, "height": image.height})
        for det in image.detections:
            x0, y0, x1, y1 = det.box
            w, h = round(x1 - x0, 2), round(y1 - y0, 2)
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": det.label + 1,
                                "bbox": [x0, y0, w, h], "area": round(w * h, 2), "iscrowd": 0, "score": det.score})
    categories = [{"id": i, "name": name, "supercategory": "object"} for i, name in enumerate(labels.categories, 1)]
    info = {"description": "labelled by `ovdet label`", "model": labels.model,
            "images_root": str(labels.images_root)}  # the folder file_name is relative to (data.train_images)
    return file_mark.marked({"info": info, "images": images, "annotations": annotations, "categories": categories})


def write(labels: LabelSet, out: Path) -> list[Path]:
    return [atomic_write_text(out / FILE, json.dumps(coco_dict(labels), indent=1))]
