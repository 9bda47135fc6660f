"""A fixed vocabulary's text embeddings on disk, so LVIS's 1203 names are encoded once, not per run.

One `.safetensors` file: `embeds` [T, Q, E] (one L2-normalised embedding per template and name,
so both template modes work), and in its metadata the names, the templates and the fingerprint
of the text tower that made them. A cache made by another model is refused on load.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save

from ovdet import file_mark
from ovdet.errors import OvdetError
from ovdet.safe_write import atomic_write_bytes, check_output_path

FORMAT = "ovdet-vocab-cache/1"
COCO_NAMES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors", "teddy bear",
    "hair drier", "toothbrush",
)  # fmt: skip


@dataclass
class VocabCache:
    """What an embed-vocab file holds."""

    names: list[str]  # Q vocabulary names, in order
    templates: list[str]  # T prompt templates
    embeds: torch.Tensor  # [T, Q, E] L2-normalised, fp32
    fingerprint: str  # the text tower's fingerprint (TextEncoder.fingerprint)
    model: str  # what the user called the model, for messages


def check_vocab_cache_target(path: str | Path, option: str = "vocabulary cache", overwrite: bool = False) -> Path:
    """Refuse (one line) to write a vocabulary cache over anything but an earlier one of ovdet's: a model's
    `model.safetensors` has the same suffix, and may even carry ovdet's mark. Cheap: run it before any model load."""
    path = check_output_path(path, option, suffixes=(".safetensors",), overwrite=overwrite)  # the mark's rule
    if not overwrite and path.is_file() and not _is_vocab_cache(path):
        raise OvdetError(f"{option} '{path}' exists and is not a vocabulary cache (it holds other tensors, such as a "
                         "model's weights): choose a new path or pass --overwrite to replace it")
    return path


def _is_vocab_cache(path: Path) -> bool:
    try:
        with safe_open(str(path), framework="np") as f:
            return (f.metadata() or {}).get("format") == FORMAT
    except Exception:  # noqa: BLE001 - an unreadable header is not a vocabulary cache
        return False


def write_vocab_cache(path: str | Path, cache: VocabCache, overwrite: bool = False) -> Path:
    """Write `cache` to a `.safetensors` file atomically (parent folders created), marked as ovdet's; an
    existing file is replaced only when it is an earlier vocabulary cache of ovdet's (or `overwrite`)."""
    path = Path(path)
    t, q, _ = cache.embeds.shape
    if (t, q) != (len(cache.templates), len(cache.names)):
        raise ValueError(
            f"embeds {tuple(cache.embeds.shape)} do not match {len(cache.templates)} templates x {len(cache.names)} names"
        )
    check_vocab_cache_target(path, overwrite=overwrite)
    meta = {
        file_mark.MARK_KEY: file_mark.MARK_VALUE,
        "format": FORMAT,
        "names": json.dumps(cache.names),
        "templates": json.dumps(cache.templates),
        "fingerprint": cache.fingerprint,
        "model": cache.model,
    }
    atomic_write_bytes(path, save({"embeds": cache.embeds.float().contiguous().cpu()}, metadata=meta))
    return path


def read_vocab_cache(path: str | Path) -> VocabCache:
    """Read a file written by `write_vocab_cache` (`ovdet embed-vocab`), checked: a file that is corrupt,
    edited, or whose names do not match its embeddings is one ValueError naming it."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"vocabulary cache '{path}' not found; write one with `ovdet embed-vocab --out {path}`")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            embeds = f.get_tensor("embeds")
    except Exception as err:  # safetensors raises its own error types for a bad header
        raise ValueError(f"'{path}' is not a vocabulary cache ({err}); write one with `ovdet embed-vocab`") from None
    if meta.get("format") != FORMAT:
        raise ValueError(f"'{path}' is not an ovdet vocabulary cache (format {meta.get('format')!r}, want {FORMAT!r})")
    fix = f"write it again with `ovdet embed-vocab --out {path}`"
    names, templates = _json_list(meta, "names", path, fix), _json_list(meta, "templates", path, fix)
    if not isinstance(meta.get("fingerprint"), str):
        raise ValueError(f"vocabulary cache '{path}' has no text-tower fingerprint; {fix}")
    if embeds.ndim != 3 or tuple(embeds.shape[:2]) != (len(templates), len(names)) or not embeds.is_floating_point():
        raise ValueError(
            f"vocabulary cache '{path}' holds embeddings {list(embeds.shape)} ({embeds.dtype}) for {len(templates)} "
            f"templates x {len(names)} names; its names and embeddings do not belong together: {fix}"
        )
    if not torch.isfinite(embeds).all():
        raise ValueError(f"vocabulary cache '{path}' holds NaN or infinite embeddings; it is corrupt: {fix}")
    repeated = sorted({n for n in names if names.count(n) > 1}) if len(set(names)) < len(names) else []
    if repeated:
        raise ValueError(f"vocabulary cache '{path}' lists the names {repeated[:5]} more than once; {fix}")
    return VocabCache(names=names, templates=templates, embeds=embeds.float(), fingerprint=meta["fingerprint"],
                      model=str(meta.get("model", "?")))  # fmt: skip


def _json_list(meta: dict, key: str, path: Path, fix: str) -> list[str]:
    """A metadata entry that must be a JSON list of non-empty strings."""
    try:
        value = json.loads(meta[key])
    except (KeyError, TypeError, json.JSONDecodeError):
        value = None
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v.strip() for v in value):
        raise ValueError(f"vocabulary cache '{path}' has no valid '{key}' list in its metadata; {fix}")
    return value


def resolve_vocabulary(spec: str) -> list[str]:
    """Names from `coco` (the 80 COCO classes), a `.txt` file (one name a line), or a COCO/LVIS `.json`.

    LVIS's 1203 names are not shipped: pass the LVIS annotation json (e.g. `lvis_v1_val.json`).
    """
    if spec == "coco":
        return list(COCO_NAMES)
    if spec == "lvis":
        raise ValueError("the LVIS names are not shipped with ovdet; pass the LVIS json itself: --vocab lvis_v1_val.json")
    path = Path(spec)
    if not path.is_file():
        raise ValueError(f"vocabulary {spec!r} is neither 'coco' nor an existing .txt/.json file")
    if path.suffix == ".json":
        data = json.loads(path.read_text())
        items = data.get("categories", []) if isinstance(data, dict) else data
        names = [c["name"] if isinstance(c, dict) else str(c) for c in items]
    else:
        names = path.read_text().splitlines()
    names = [n.strip() for n in names if n.strip()]
    if not names:
        raise ValueError(f"no names in '{path}'; a .txt has one name a line, a .json COCO-style 'categories'")
    return names
