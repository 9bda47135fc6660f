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
from safetensors.torch import save_file

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


def write_vocab_cache(path: str | Path, cache: VocabCache) -> Path:
    """Write `cache` to a `.safetensors` file (parent folders created)."""
    path = Path(path)
    t, q, _ = cache.embeds.shape
    if (t, q) != (len(cache.templates), len(cache.names)):
        raise ValueError(
            f"embeds {tuple(cache.embeds.shape)} do not match {len(cache.templates)} templates x {len(cache.names)} names"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "format": FORMAT,
        "names": json.dumps(cache.names),
        "templates": json.dumps(cache.templates),
        "fingerprint": cache.fingerprint,
        "model": cache.model,
    }
    save_file({"embeds": cache.embeds.float().contiguous().cpu()}, str(path), metadata=meta)
    return path


def read_vocab_cache(path: str | Path) -> VocabCache:
    """Read a file written by `write_vocab_cache` (`ovdet embed-vocab`)."""
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
    return VocabCache(
        names=json.loads(meta["names"]), templates=json.loads(meta["templates"]), embeds=embeds,
        fingerprint=meta["fingerprint"], model=meta.get("model", "?"),
    )  # fmt: skip


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
