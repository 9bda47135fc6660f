"""The labelled images of one `ovdet label` run, in memory, before any format writes them."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ovdet.errors import OvdetError
from ovdet.models.detection import Detection


@dataclass
class LabelledImage:
    path: str  # as the user gave it
    file_name: str  # relative to the set's images_root, with '/' (COCO `file_name`)
    width: int
    height: int
    detections: list[Detection] = field(default_factory=list)  # boxes xyxy in the file's pixels

    @property
    def stem(self) -> str:
        """The name YOLO and VOC files are keyed by (`labels/<stem>.txt`, `Annotations/<stem>.xml`)."""
        return Path(self.file_name).stem


@dataclass
class LabelSet:
    categories: list[str]  # the query texts, in -q order; a detection's `label` indexes this
    images_root: Path  # the folder every file_name is relative to
    images: list[LabelledImage]
    model: str  # what labelled it


def images_root(paths: list[str]) -> tuple[Path, list[str]]:
    """The deepest folder holding every image, and each image's path below it ('/'-separated)."""
    absolute = [Path(os.path.abspath(p)) for p in paths]
    root = Path(os.path.commonpath([str(p.parent) for p in absolute]))
    return root, [p.relative_to(root).as_posix() for p in absolute]


def check_unique_stems(file_names: list[str]) -> None:
    """YOLO and VOC name a label file after its image's stem: two images sharing one would share a file."""
    seen: dict[str, str] = {}
    for name in file_names:
        stem = Path(name).stem
        if stem in seen:
            raise OvdetError(
                f"images '{seen[stem]}' and '{name}' share the name '{stem}', so their YOLO/VOC label files would "
                "be one file; rename one, or label them in separate runs"
            )
        seen[stem] = name


def keep_detections(detections: list[Detection], thresholds: list[float], floor: float,
                    min_box: float = 0.0) -> list[Detection]:
    """`ovdet detect`'s detections (run at the lowest threshold, `floor`), each kept when it reaches its
    query's own threshold and its box is at least `min_box` pixels wide and high.

    A query at `floor` is not checked again: detect already kept exactly its boxes, and a second test
    on the rounded score could drop one that detect kept."""
    kept = []
    for det in detections:
        x0, y0, x1, y1 = det.box
        threshold = thresholds[det.label]
        if (threshold <= floor or det.score >= threshold) and min(x1 - x0, y1 - y0) >= min_box:
            kept.append(det)
    return kept
