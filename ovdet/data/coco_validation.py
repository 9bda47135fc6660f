"""Read a COCO-format annotation json and check it before pycocotools indexes it.

Two outcomes, by how much a problem spoils the file:
- rejected with one ValueError that names the file and the record: not JSON, not an object,
  no `images` / `categories` list, an image without an integer `id` or a file name, two images
  or two categories with the same id, two categories with the same name, a non-positive size;
  these make the boxes ambiguous (which file, which name?), so no guess is made;
- cleaned, and counted: annotations that are not objects or lack an integer `image_id` /
  `category_id` are dropped ("malformed"), missing or repeated annotation ids are renumbered.
  `CocoDetection` adds these counts to its one warning, with the boxes it clips or drops.

Evaluation (`check_eval_json`) is stricter: a dropped ground-truth box would change the score, so
every annotation must be a dict with a unique integer `id`, a known integer `image_id` and
`category_id` and a `bbox` of 4 finite numbers; the first that is not is one ValueError naming it.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections import Counter
from pathlib import Path

from pycocotools.coco import COCO

from ovdet.json_file import read_json_file


def load_coco(path: str | Path) -> tuple[COCO, Counter]:
    """A pycocotools `COCO` of the checked json, and the counts of what cleaning changed."""
    data, counts = read_coco_json(path)
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        coco.createIndex()
    return coco, counts


def read_coco_json(path: str | Path) -> tuple[dict, Counter]:
    """The parsed, checked and cleaned json; raises ValueError for a file that cannot be trusted."""
    path = Path(path)
    data = read_json_file(path, f"annotation file '{path}'")
    if not isinstance(data, dict):
        raise ValueError(f"annotation file '{path}' holds a JSON {type(data).__name__}, not a COCO object")
    _check_top_level(data, path)
    annotations, counts = _clean_annotations(data.get("annotations", []))
    return {**data, "annotations": annotations}, counts


def check_eval_json(data, source: str | Path) -> dict:
    """`data` (a parsed COCO/LVIS json) when evaluation can trust every record; else one ValueError naming the
    first bad record and the fix. `source` names the file in the message."""
    if not isinstance(data, dict):
        raise ValueError(f"annotation file '{source}' holds a JSON {type(data).__name__}, not a COCO object")
    _check_top_level(data, source, need_files=False)  # scoring saved predictions needs no image files
    if "annotations" not in data:
        raise ValueError(f"annotation file '{source}' has no 'annotations' list; box AP needs the ground-truth boxes")
    images = {img["id"] for img in data["images"]}
    cats = {cat["id"] for cat in data["categories"]}
    seen: set[int] = set()
    for i, ann in enumerate(data["annotations"]):
        problem = _annotation_problem(ann, images, cats, seen)
        if problem:
            ann_id = f" (id {ann.get('id')!r})" if isinstance(ann, dict) and "id" in ann else ""
            raise ValueError(f"annotation file '{source}': annotations[{i}]{ann_id} {problem}")
        seen.add(ann["id"])
    return data


def _check_top_level(data: dict, path, need_files: bool = True) -> None:
    for key in ("images", "categories"):
        if not isinstance(data.get(key), list):
            raise ValueError(f"annotation file '{path}' has no '{key}' list; is it a COCO instances json?")
    annotations = data.get("annotations", [])
    if not isinstance(annotations, list):
        raise ValueError(
            f"annotation file '{path}': 'annotations' must be a list of annotation records, got a JSON "
            f"{'object' if isinstance(annotations, dict) else type(annotations).__name__}"
        )
    _check_images(data["images"], path, need_files)
    _check_categories(data["categories"], path)


def _annotation_problem(ann, images: set, cats: set, seen: set) -> str | None:
    """What makes one ground-truth annotation unusable for evaluation, with the fix; None when it is fine."""
    if not isinstance(ann, dict):
        return f"is {str(ann)[:60]!r}, not an annotation object; give {{id, image_id, category_id, bbox}}"
    for key, known, where in (("image_id", images, "images"), ("category_id", cats, "categories")):
        if key not in ann:
            return f"has no '{key}'; give the integer id of one of the json's {where}"
        if not _is_id(ann[key]):
            return f"has {key} {ann[key]!r}; give the integer id (not a string) of one of the json's {where}"
        if ann[key] not in known:
            return f"has {key} {ann[key]} that none of the json's {where} has; fix the id or add the entry"
    if not _is_id(ann.get("id")):
        return f"has id {ann.get('id')!r}; give each annotation a unique integer 'id'"
    if ann["id"] in seen:
        return f"repeats annotation id {ann['id']}; give each annotation its own id (a repeat hides a box)"
    box = ann.get("bbox")
    if (not isinstance(box, list) or len(box) != 4 or not all(_is_number(v) for v in box)
            or box[2] < 0 or box[3] < 0):  # fmt: skip
        return f"has bbox {box!r}; give [x, y, width, height]: 4 finite numbers in pixels, width and height >= 0"
    if "area" in ann and not _is_number(ann["area"]):
        return f"has area {ann['area']!r}; give a number (the box or mask area in pixels) or leave it out"
    if ann.get("iscrowd", 0) not in (0, 1) or isinstance(ann.get("iscrowd"), bool):
        return f"has iscrowd {ann.get('iscrowd')!r}; give 0 or 1"
    return None


def _is_id(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_images(images: list, path: Path, need_files: bool = True) -> None:
    seen: dict[int, int] = {}
    for i, img in enumerate(images):
        if not isinstance(img, dict) or not _is_id(img.get("id")):
            raise ValueError(f"annotation file '{path}': images[{i}] has no integer 'id' ({str(img)[:120]})")
        if need_files and "file_name" not in img and "coco_url" not in img:
            raise ValueError(f"annotation file '{path}': image {img['id']} has neither 'file_name' nor 'coco_url'")
        for key in ("width", "height"):
            value = img.get(key)
            if value is not None and (not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0):
                raise ValueError(
                    f"annotation file '{path}': image {img['id']} has {key}={value!r}; give a positive number"
                )
        if img["id"] in seen:
            raise ValueError(
                f"annotation file '{path}': image id {img['id']} is used by images[{seen[img['id']]}] and images[{i}]; "
                "its boxes cannot be assigned to one file: give each image its own id"
            )
        seen[img["id"]] = i


def _check_categories(categories: list, path: Path) -> None:
    ids: set[int] = set()
    names: set[str] = set()
    for i, cat in enumerate(categories):
        if not isinstance(cat, dict) or not _is_id(cat.get("id")) or not isinstance(cat.get("name"), str):
            raise ValueError(
                f"annotation file '{path}': categories[{i}] needs an integer 'id' and a 'name' ({str(cat)[:120]})"
            )
        if cat["id"] in ids:
            raise ValueError(
                f"annotation file '{path}': category id {cat['id']} is used twice; give each category its own id"
            )
        if cat["name"] in names:
            raise ValueError(
                f"annotation file '{path}': category name {cat['name']!r} is used twice; names are the text queries, "
                "so each must be unique"
            )
        ids.add(cat["id"])
        names.add(cat["name"])


def _clean_annotations(annotations: list) -> tuple[list[dict], Counter]:
    counts: Counter = Counter()
    kept = [a for a in annotations
            if isinstance(a, dict) and _is_id(a.get("image_id")) and _is_id(a.get("category_id"))]
    counts["malformed"] = len(annotations) - len(kept)
    used: set = set()
    next_id = max([a["id"] for a in kept if _is_id(a.get("id"))], default=0) + 1
    cleaned = []
    for ann in kept:
        if not _is_id(ann.get("id")) or ann["id"] in used:
            ann = {**ann, "id": next_id}  # pycocotools indexes annotations by id: a repeat would hide a box
            next_id += 1
            counts["renumbered"] += 1
        used.add(ann["id"])
        cleaned.append(ann)
    return cleaned, counts
