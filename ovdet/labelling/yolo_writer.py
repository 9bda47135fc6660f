"""YOLO txt labels (`DIR/labels/NAME.txt`: `class cx cy w h`, 0..1 of the image) and `DIR/data.yaml`.

A YOLO trainer finds `labels/NAME.txt` beside `images/NAME.jpg`: `--out` the folder that holds your
`images/` folder gives that layout (data.yaml's train/val then name it). Label lines carry no mark (a
reader would take it for a box); `labels.meta.json` marks them (`ovdet.labelling.label_manifest`).
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from ovdet import file_mark
from ovdet.labelling.label_manifest import MANIFEST, is_listed, listed_files, write_listed
from ovdet.labelling.label_set import LabelledImage, LabelSet
from ovdet.safe_write import atomic_write_text

DATA_YAML = "data.yaml"
LABELS = "labels"


def label_path(out: Path, file_name: str) -> Path:
    return out / LABELS / f"{Path(file_name).stem}.txt"


def targets(out: Path, file_names: list[str]) -> list[Path]:
    return [out / DATA_YAML, out / MANIFEST, *(label_path(out, name) for name in file_names)]


def ours(out: Path):
    """data.yaml and the manifest carry the mark; a label file is ours when the manifest lists its content."""
    listed = listed_files(out)
    return lambda path: is_listed(out, path, listed) if path.suffix == ".txt" else file_mark.is_ours(path)


def label_lines(image: LabelledImage) -> str:
    """One `class cx cy w h` line per detection, normalised by the image's width and height."""
    lines = []
    for det in image.detections:
        x0, y0, x1, y1 = det.box
        cx, cy = (x0 + x1) / 2 / image.width, (y0 + y1) / 2 / image.height
        w, h = (x1 - x0) / image.width, (y1 - y0) / image.height
        lines.append(f"{det.label} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}\n")
    return "".join(lines)


def data_yaml(labels: LabelSet, out: Path) -> str:
    """What a YOLO trainer reads: the dataset root, the images folder for train and val, the class names."""
    root = os.path.abspath(out)
    images = os.path.relpath(labels.images_root, root)
    images = str(labels.images_root) if images.startswith("..") else images  # outside DIR: absolute
    data = {"path": root, "train": images, "val": images, "nc": len(labels.categories),
            "names": dict(enumerate(labels.categories))}
    return file_mark.marked_text(DATA_YAML, yaml.safe_dump(data, sort_keys=False, allow_unicode=True))


def write(labels: LabelSet, out: Path) -> list[Path]:
    written = write_listed(out, {label_path(out, im.file_name): label_lines(im) for im in labels.images})
    return [atomic_write_text(out / DATA_YAML, data_yaml(labels, out)), out / MANIFEST, *written]
