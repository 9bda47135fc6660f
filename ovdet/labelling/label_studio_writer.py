"""Label Studio tasks with pre-annotations (`DIR/tasks.json`), and the labelling config they fit
(`DIR/label_config.xml`), as Label Studio's docs give them ("Import pre-annotated data"):
each task is `{"data": {"image": URL}, "predictions": [{"model_version", "score", "result"}]}`, a
result a `rectanglelabels` region in percent of `original_width` x `original_height`.

The image URL is `--image-url-prefix` + the image's path below the images root; the default serves
local files (Label Studio started with LOCAL_FILES_SERVING_ENABLED=true and
LOCAL_FILES_DOCUMENT_ROOT=<the images root>). tasks.json stays a bare list: its mark is the sidecar
`tasks.meta.json` (`ovdet.file_mark`)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote
from xml.etree.ElementTree import Element, SubElement

from ovdet import file_mark
from ovdet.inference.results_file import write_list
from ovdet.labelling.label_set import LabelledImage, LabelSet
from ovdet.labelling.xml_mark import marked_xml, xml_is_ours
from ovdet.safe_write import atomic_write_text

TASKS = "tasks.json"
CONFIG = "label_config.xml"
LOCAL_FILES = "/data/local-files/?d="
FROM_NAME, TO_NAME = "label", "image"  # the control and object tag names of label_config.xml


def targets(out: Path, file_names: list[str]) -> list[Path]:
    return [out / TASKS, file_mark.sidecar_path(out / TASKS), out / CONFIG]


def ours(out: Path):
    return lambda path: xml_is_ours(path) if path.suffix == ".xml" else file_mark.is_ours(path)


def region(det, width: int, height: int, index: int) -> dict:
    """One detection as a Label Studio rectangle: x, y, width, height in percent of the image."""
    x0, y0, x1, y1 = det.box
    value = {"x": 100 * x0 / width, "y": 100 * y0 / height, "width": 100 * (x1 - x0) / width,
             "height": 100 * (y1 - y0) / height, "rotation": 0, "rectanglelabels": [det.query]}
    return {"id": f"r{index}", "from_name": FROM_NAME, "to_name": TO_NAME, "type": "rectanglelabels",
            "original_width": width, "original_height": height, "image_rotation": 0, "value": value,
            "score": det.score}


def task(image: LabelledImage, model: str, url_prefix: str) -> dict:
    result = [region(d, image.width, image.height, i) for i, d in enumerate(image.detections)]
    score = min((d.score for d in image.detections), default=0.0)  # the least sure box: sort tasks by it to review
    return {"data": {TO_NAME: url_prefix + quote(image.file_name)},
            "predictions": [{"model_version": model, "score": score, "result": result}]}


def label_config(categories: list[str]) -> Element:
    """`<View><Image/><RectangleLabels>` with one `<Label>` per query: paste it as the project's config."""
    view = Element("View")
    SubElement(view, "Image", name=TO_NAME, value=f"${TO_NAME}")
    labels = SubElement(view, "RectangleLabels", name=FROM_NAME, toName=TO_NAME)
    for name in categories:
        SubElement(labels, "Label", value=name)
    return view


def write(labels: LabelSet, out: Path, url_prefix: str = LOCAL_FILES) -> list[Path]:
    tasks = [task(im, labels.model, url_prefix) for im in labels.images]
    write_list(tasks, out / TASKS, meta={"images_root": str(labels.images_root)}, indent=1)
    atomic_write_text(out / CONFIG, marked_xml(label_config(labels.categories)))
    return [out / TASKS, file_mark.sidecar_path(out / TASKS), out / CONFIG]
