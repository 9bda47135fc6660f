"""COCO results files and their metadata sidecar; json only, so scoring saved predictions needs no torch.

Both are written atomically (`ovdet.safe_write`): a killed run or a full disk leaves the previous
file or none, never a cut-off list that would later score as a bad model.
"""

from __future__ import annotations

import json
from pathlib import Path

from ovdet.json_file import read_json_file
from ovdet.safe_write import atomic_write_text


def meta_path(predictions: str | Path) -> Path:
    """Sidecar of a results file (`preds.json` -> `preds.meta.json`): COCO results must stay a bare list."""
    path = Path(predictions)
    return path.with_name(f"{path.stem}.meta.json")


def write_results(records: list[dict], path: str | Path, meta: dict | None = None) -> Path:
    """Write the COCO results list and, when given, what produced it into the sidecar."""
    path = Path(path)
    atomic_write_text(path, json.dumps(records))
    if meta is not None:
        atomic_write_text(meta_path(path), json.dumps(meta, indent=2))
    return path


def read_meta(predictions: str | Path) -> dict:
    """The sidecar written with a results file, or {} when there is none."""
    side = meta_path(predictions)
    if not side.is_file():
        return {}
    meta = read_json_file(side, f"'{side}' (what produced '{predictions}')", "; delete it")
    if not isinstance(meta, dict):
        raise ValueError(f"'{side}' (what produced '{predictions}') must hold a JSON object; delete it")
    return meta
