"""COCO results files and their metadata sidecar; json only, so scoring saved predictions needs no torch.

COCO results must stay a bare list, so ovdet's mark lives in the sidecar `NAME.meta.json`, with what
produced the list and its sha256 (`ovdet.file_mark`): a results file edited or written by anyone else
is not ovdet's, and is never replaced without `--overwrite`. Both files are written atomically
(`ovdet.safe_write`): a killed run or a full disk leaves the previous file or none, never a cut-off
list that would later score as a bad model.
"""

from __future__ import annotations

import json
from pathlib import Path

from ovdet import file_mark
from ovdet.json_file import read_json_file
from ovdet.safe_write import atomic_write_bytes, atomic_write_text


def meta_path(predictions: str | Path) -> Path:
    """Sidecar of a results file (`preds.json` -> `preds.meta.json`): COCO results must stay a bare list."""
    return file_mark.sidecar_path(predictions)


def write_list(records: list, path: str | Path, meta: dict | None = None, indent: int | None = None) -> Path:
    """Write a JSON list and its marked sidecar (what produced it, when given, and the list's sha256)."""
    path = Path(path)
    data = json.dumps(records, indent=indent).encode("utf-8")
    atomic_write_bytes(path, data)
    atomic_write_text(meta_path(path), json.dumps(file_mark.list_sidecar(data, meta), indent=2))
    return path


def write_object(obj: dict, path: str | Path, indent: int | None = 2) -> Path:
    """Write a JSON object with ovdet's mark (`written_by`), atomically."""
    return atomic_write_text(path, json.dumps(file_mark.marked(obj), indent=indent))


def write_results(records: list[dict], path: str | Path, meta: dict | None = None) -> Path:
    """Write the COCO results list and its sidecar (what produced it, and ovdet's mark)."""
    return write_list(records, path, meta)


def read_meta(predictions: str | Path) -> dict:
    """What produced a results file, from its sidecar ({} when there is none); the mark is left out."""
    side = meta_path(predictions)
    if not side.is_file():
        return {}
    meta = read_json_file(side, f"'{side}' (what produced '{predictions}')", "; delete it")
    if not isinstance(meta, dict):
        raise ValueError(f"'{side}' (what produced '{predictions}') must hold a JSON object; delete it")
    return {k: v for k, v in meta.items() if k not in (file_mark.MARK_KEY, file_mark.SHA_KEY)}
