"""COCO results files and their metadata sidecar; json only, so scoring saved predictions needs no torch."""

from __future__ import annotations

import json
from pathlib import Path


def meta_path(predictions: str | Path) -> Path:
    """Sidecar of a results file (`preds.json` -> `preds.meta.json`): COCO results must stay a bare list."""
    path = Path(predictions)
    return path.with_name(f"{path.stem}.meta.json")


def write_results(records: list[dict], path: str | Path, meta: dict | None = None) -> Path:
    """Write the COCO results list and, when given, what produced it into the sidecar."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(records))
    if meta is not None:
        meta_path(path).write_text(json.dumps(meta, indent=2))
    return path


def read_meta(predictions: str | Path) -> dict:
    """The sidecar written with a results file, or {} when there is none."""
    side = meta_path(predictions)
    return json.loads(side.read_text()) if side.is_file() else {}
