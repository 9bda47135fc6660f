"""Read and check COCO-style results (image_id, category_id, bbox xywh, score) at the boundary.

A results file is read as a stream, one record at a time; each record is checked (a bad one is
one ValueError naming it and the fix) and only what the protocol counts is kept while reading, so
millions of detections need little memory: LVIS counts the best 300 of each image, COCOeval the best
`maxDets` (100) of each image and category.
"""

from __future__ import annotations

import heapq
import json
import math
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from ovdet.json_file import read_json_file

RESULT_KEYS = ("image_id", "category_id", "bbox", "score")
MAX_PER_IMAGE = 300  # LVIS keeps 300 per image (COCOeval: 100 per image and category)
CHUNK_CHARS = 1 << 20
MAX_RECORD_CHARS = 1 << 24  # no detection record is 16 M characters long
RESULTS_HINT = 'COCO results are one JSON list of {"image_id", "category_id", "bbox": [x, y, w, h], "score"}'
_SPACE = re.compile(r"[ \t\n\r]*")


def load_json(source: str | Path | dict | list) -> dict | list:
    """A json file's content, or `source` itself when it is already loaded."""
    if isinstance(source, (dict, list)):
        return source
    path = Path(source)
    if not path.is_file():
        raise ValueError(f"json file '{path}' not found")
    return read_json_file(path)


def load_predictions(
    predictions: str | Path | Sequence[dict],
    image_ids: Iterable[int],
    cat_ids: Iterable[int],
    max_per_image: int = MAX_PER_IMAGE,
    per_category: bool = False,
) -> list[dict]:
    """Fresh, checked copies of the detections (the COCO and LVIS APIs write into them); see `read_predictions`."""
    return read_predictions(predictions, image_ids, cat_ids, max_per_image, per_category)[0]


def read_predictions(
    predictions: str | Path | Sequence[dict],
    image_ids: Iterable[int],
    cat_ids: Iterable[int],
    max_per_image: int = MAX_PER_IMAGE,
    per_category: bool = False,
) -> tuple[list[dict], int]:
    """The best `max_per_image` detections of each image, in file order, and how many were dropped.

    per_category: keep the best `max_per_image` of each (image, category) instead, as COCOeval counts
        them (its `maxDets` applies per image and category), so the kept ones score as all of them would.

    Raises ValueError naming the record when one is not a detection (a bbox that is not 4 numbers,
    a string score, a nested list ...) or names an image or category the ground truth lacks:
    pycocotools would assert, crash or silently drop them.
    """
    name = f"predictions file '{predictions}'" if isinstance(predictions, (str, Path)) else "predictions"
    if isinstance(predictions, (str, Path)):
        records: Iterable = iter_json_array(Path(predictions), name)
    elif isinstance(predictions, (list, tuple)):
        records = predictions
    else:
        raise ValueError(f"{name} must be a COCO results list, got {type(predictions).__name__}; {RESULTS_HINT}")
    known = {"image_id": set(image_ids), "category_id": set(cat_ids)}
    unknown: dict[str, set] = {"image_id": set(), "category_id": set()}
    heaps: dict[int | tuple[int, int], list[tuple]] = {}
    total = 0
    for i, rec in enumerate(records):
        image_id, cat_id, box, score = check_record(rec, i, name)
        for key, value in (("image_id", image_id), ("category_id", cat_id)):
            if value not in known[key] and len(unknown[key]) <= 10:
                unknown[key].add(value)
        heap = heaps.setdefault((image_id, cat_id) if per_category else image_id, [])
        item = (score, -i, image_id, cat_id, box)  # the lowest score, then the latest, leaves first (a stable top k)
        heapq.heappush(heap, item) if len(heap) < max_per_image else heapq.heappushpop(heap, item)
        total += 1
    for key in ("image_id", "category_id"):
        _check_ids(key, unknown[key], name)
    kept = sorted((-neg_i, img, cat, box, score) for heap in heaps.values() for score, neg_i, img, cat, box in heap)
    dets = [{"image_id": img, "category_id": cat, "bbox": box, "score": score} for _, img, cat, box, score in kept]
    return dets, total - len(dets)


def warn_dropped(dropped: int, kept: int, rule: str) -> None:
    """Say on the console what was left out before scoring (an OvdetWarning: `ovdet eval` prints one line)."""
    if dropped:
        import warnings

        from ovdet.errors import OvdetWarning

        warnings.warn(f"{dropped} of {dropped + kept} detections were left out before scoring: {rule}",
                      OvdetWarning, stacklevel=3)  # fmt: skip


def check_record(rec, i: int, name: str = "predictions") -> tuple[int, int, list[float], float]:
    """(image_id, category_id, bbox, score) of one COCO results record; one ValueError naming a bad one."""
    if not isinstance(rec, dict):
        kind = "a list (a list of lists? give one flat list of records)" if isinstance(rec, list) else repr(rec)[:60]
        raise ValueError(f"{name}: record {i} is {kind}, not a detection object; {RESULTS_HINT}")
    missing = [k for k in RESULT_KEYS if k not in rec]
    if missing:
        if {"detections", "file_name", "path"} & set(rec):
            raise ValueError(
                f"{name}: record {i} is an image record ({sorted(rec)[:5]}), not a detection; {RESULTS_HINT} "
                "(`ovdet eval --model M --predictions FILE` writes them)"
            )
        raise ValueError(f"{name}: record {i} lacks {missing}; {RESULTS_HINT}")
    ids = []
    for key in ("image_id", "category_id"):
        value = rec[key]
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError(f"{name}: record {i} has {key} {value!r}; give the integer id of the annotation json")
        ids.append(value)
    box = rec["bbox"]
    if (not isinstance(box, (list, tuple)) or len(box) != 4 or not all(_is_number(v) for v in box)
            or box[2] < 0 or box[3] < 0):  # fmt: skip
        raise ValueError(
            f"{name}: record {i} (image {ids[0]}) has bbox {box!r}; give [x, y, width, height]: 4 finite numbers "
            "in pixels, width and height >= 0"
        )
    score = rec["score"]
    if not _is_number(score):
        raise ValueError(f"{name}: record {i} (image {ids[0]}) has score {score!r}; give a finite number such as 0.87")
    return ids[0], ids[1], [float(v) for v in box], float(score)


def iter_json_array(path: Path, name: str) -> Iterator:
    """The items of the JSON list in `path`, parsed one at a time (the file is never held whole)."""
    if not path.is_file():
        raise ValueError(f"{name} not found")
    decoder = json.JSONDecoder()
    with path.open(encoding="utf-8") as f:
        reader = _Reader(f, path)
        first = reader.peek()
        if first != "[":
            what = {"{": "a JSON object", "": "nothing"}.get(first, "no JSON list")
            raise ValueError(f"{name} holds {what}, not a list of detections; {RESULTS_HINT}")
        reader.pos += 1
        if reader.peek() == "]":
            reader.pos += 1
        else:
            while True:
                yield reader.value(decoder)
                sep = reader.peek()
                reader.pos += 1
                if sep == "]":
                    break
                if sep != ",":
                    raise ValueError(f"'{path}' is not valid JSON (',' or ']' expected at character {reader.offset()})")
        if reader.peek() != "":
            raise ValueError(f"'{path}' is not valid JSON (extra data after the list at character {reader.offset()})")


class _Reader:
    """A text file read in chunks, with a position in the current chunk."""

    def __init__(self, f, path: Path):
        self.f, self.path = f, path
        self.buf, self.pos, self.consumed, self.eof = "", 0, 0, False

    def offset(self) -> int:
        return self.consumed + self.pos

    def more(self) -> bool:
        if self.eof:
            return False
        try:
            chunk = self.f.read(CHUNK_CHARS)
        except UnicodeDecodeError as err:
            raise ValueError(f"'{self.path}' is not UTF-8 text ({err})") from None
        self.consumed += self.pos
        self.buf, self.pos, self.eof = self.buf[self.pos :] + chunk, 0, not chunk
        return bool(chunk)

    def peek(self) -> str:
        """The next non-space character ('' at the end), not consumed."""
        while True:
            self.pos = _SPACE.match(self.buf, self.pos).end()
            if self.pos < len(self.buf) or not self.more():
                return self.buf[self.pos : self.pos + 1]

    def value(self, decoder: json.JSONDecoder):
        self.peek()
        while True:
            try:
                obj, end = decoder.raw_decode(self.buf, self.pos)
                if end < len(self.buf) or self.eof:  # a number at the very end may go on in the next chunk
                    self.pos = end
                    return obj
            except json.JSONDecodeError as err:
                if self.eof:
                    raise ValueError(f"'{self.path}' is not valid JSON ({err.msg} at character "
                                     f"{self.consumed + err.pos}); was it written completely?") from None  # fmt: skip
            if len(self.buf) - self.pos > MAX_RECORD_CHARS:
                raise ValueError(f"'{self.path}' holds a record over {MAX_RECORD_CHARS} characters: not COCO results")
            self.more()


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_ids(key: str, unknown: set, name: str) -> None:
    if unknown:
        shown = f"{sorted(unknown)[:10]}{' ...' if len(unknown) > 10 else ''}"
        raise ValueError(
            f"{name}: detections use {key} values that the ground truth lacks: {shown}; "
            "evaluate against the annotation json they came from"
        )
