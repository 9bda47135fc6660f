"""Pascal VOC XML, one `DIR/Annotations/NAME.xml` per image (the VOC devkit layout).

Corners are the devkit's 1-based inclusive integer pixels: `xmin = round(x0) + 1`, `xmax = round(x1)`,
so a reader that subtracts 1 from the minimum corners (supervision, the devkit) gets the box back to
within half a pixel."""

from __future__ import annotations

from pathlib import Path
from xml.etree.ElementTree import Element, SubElement

from ovdet.labelling.label_set import LabelledImage, LabelSet
from ovdet.labelling.xml_mark import marked_xml, xml_is_ours
from ovdet.safe_write import atomic_write_text

ANNOTATIONS = "Annotations"


def annotation_path(out: Path, file_name: str) -> Path:
    return out / ANNOTATIONS / f"{Path(file_name).stem}.xml"


def targets(out: Path, file_names: list[str]) -> list[Path]:
    return [annotation_path(out, name) for name in file_names]


def ours(out: Path):
    return xml_is_ours


def _text(parent: Element, tag: str, value) -> Element:
    child = SubElement(parent, tag)
    child.text = str(value)
    return child


def voc_xml(image: LabelledImage, images_root: Path) -> Element:
    """The `<annotation>` element of one image."""
    root = Element("annotation")
    path = images_root / image.file_name
    _text(root, "folder", path.parent.name)
    _text(root, "filename", path.name)
    _text(root, "path", str(path))
    _text(SubElement(root, "source"), "database", "ovdet label")
    size = SubElement(root, "size")
    for tag, value in (("width", image.width), ("height", image.height), ("depth", 3)):
        _text(size, tag, value)
    _text(root, "segmented", 0)
    for det in image.detections:
        obj = SubElement(root, "object")
        for tag, value in (("name", det.query), ("pose", "Unspecified"), ("truncated", 0), ("difficult", 0)):
            _text(obj, tag, value)
        box = SubElement(obj, "bndbox")
        x0, y0, x1, y1 = det.box
        corners = (("xmin", round(x0) + 1), ("ymin", round(y0) + 1), ("xmax", round(x1)), ("ymax", round(y1)))
        for tag, value in corners:
            _text(box, tag, value)
    return root


def write(labels: LabelSet, out: Path) -> list[Path]:
    return [atomic_write_text(annotation_path(out, im.file_name), marked_xml(voc_xml(im, labels.images_root)))
            for im in labels.images]
