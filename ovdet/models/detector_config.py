"""Every key of a detector's `config.json`, its type, its default and its allowed range, written once.

`DetectorConfig.from_dict` checks a whole config before anything is built, so a bad or hostile
file is one `ValueError` naming the key, and no value can make ovdet allocate gigabytes first.
Adding a key is one line here (plus its range in `_RANGES` when it is a number).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field

MODEL_TYPE = "ovdet"
FORMAT_VERSION = 1
PREPROCESS_MODES = ("pad", "stretch", "pad_gaussian")  # ovdet / OWL-ViT / OWLv2 (see ImagePreprocessor)
BOX_BIASES = ("centre", "corner")  # ovdet's cell-centre prior / OWL-ViT's grid-corner prior (see head)
MAX_JSON_DEPTH = 6  # a config nests at most a few levels (rescore.reference): deeper is refused unread
MAX_LIST_ITEMS = 10_000
# The formats `Detector.config` records in clip.format (LoadedCLIP.format): transformers CLIP, SigLIP, OWL-ViT,
# OWLv2, ALIGN, MetaCLIP 2, SigLIP2 NaFlex, and open_clip ResNets (open_clip ViTs load as transformers CLIPs, "hf").
CLIP_FORMATS = ("hf", "siglip", "owlvit", "owlv2", "open_clip", "align", "metaclip_2", "siglip2")
# Every template and reference name is a text-tower pass before the first image is scored (~22 ms each on a
# CPU with a B/32: 10,000 took 220 s); CLIP's own ensemble, the largest set ovdet ships (clip80), has 80.
MAX_TEMPLATES = 100
MAX_REFERENCE_NAMES = 256


@dataclass
class DetectorConfig:
    """What `config.json` holds: the CLIP reference, the head's shape and the inference defaults.

    clip: {"format", "path"} of the towers (a folder inside the model folder, e.g. "clip").
    image_size: side of the square input, a multiple of the tower's stride.
    box_layers / objectness_layers: depth of the box and objectness MLPs (objectness 0: none, OWL-ViT).
    context_blocks: 3x3 conv blocks the box and objectness MLPs see the neighbours through.
    box_bias: "centre" (ovdet) or "corner" (OWL-ViT's `compute_box_bias`).
    preprocess: "pad" (ovdet), "stretch" (OWL-ViT) or "pad_gaussian" (OWLv2); see ImagePreprocessor.
    templates: the prompt templates a query gets when the caller names none.
    threshold: the score threshold `ovdet detect`, the demo and the API use by default.
    rescore: CropRescorer settings (crops re-encoded by the tower), or None.
    region_scoring: RegionPoolScorer settings (the same keys: boxes pooled from the one pass's region map),
        or None; used when `rescore` is None. Neither: the head's own scores.
    """

    clip: dict
    image_size: int
    box_layers: int = 3
    objectness_layers: int = 2
    context_blocks: int = 0
    box_bias: str = "centre"
    preprocess: str = "pad"
    templates: str | list = "single"
    threshold: float = 0.1
    trainable_layers: int = 0
    rescore: dict | None = None
    region_scoring: dict | None = None
    feature_stride: int | None = None
    info: dict = field(default_factory=dict)
    model_type: str = MODEL_TYPE
    format_version: int = FORMAT_VERSION
    checksums: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict) -> "DetectorConfig":
        """A checked config; ValueError names the first bad key, its value and what it may be."""
        if not isinstance(data, dict):
            raise ValueError(f"a model config is a JSON object, got {type(data).__name__}")
        _check_depth(data, "config")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown key(s) {unknown}; known keys are {sorted(names)} (a typo, or a newer ovdet)")
        missing = [f.name for f in dataclasses.fields(cls) if _required(f) and f.name not in data]
        if missing:
            raise ValueError(f"missing key(s) {missing}")
        hints = typing.get_type_hints(cls)
        for key, value in data.items():
            _check_type(key, value, hints[key])
        config = cls(**{k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items()})
        config.validate()
        return config

    def asdict(self) -> dict:
        """The on-disk form (plain JSON types)."""
        return dataclasses.asdict(self)

    def validate(self) -> None:
        """Ranges and cross-field rules; types are checked by `from_dict`."""
        if self.model_type != MODEL_TYPE:
            raise ValueError(f"model_type must be {MODEL_TYPE!r}, got {self.model_type!r}")
        if self.format_version > FORMAT_VERSION:
            raise ValueError(f"format_version {self.format_version} is newer than this ovdet reads ({FORMAT_VERSION}): upgrade ovdet")
        for key, (low, high) in _RANGES.items():
            value = getattr(self, key)
            if value is not None and not low <= value <= high:
                raise ValueError(f"{key} must be in {low}..{high}, got {value!r}")
        if not isinstance(self.clip.get("path"), str) or not isinstance(self.clip.get("format", ""), str):
            raise ValueError(f"clip must be {{'format': ..., 'path': 'clip'}}, got {self.clip!r}")
        if self.clip.get("format", "hf") not in CLIP_FORMATS:
            raise ValueError(f"clip.format {_short(self.clip['format'])} is not a format ovdet knows; known: {CLIP_FORMATS}")
        if self.box_bias not in BOX_BIASES:
            raise ValueError(f"box_bias must be one of {BOX_BIASES}, got {self.box_bias!r}")
        if self.preprocess not in PREPROCESS_MODES:
            raise ValueError(f"preprocess must be one of {PREPROCESS_MODES}, got {self.preprocess!r}")
        if isinstance(self.templates, list) and not all(isinstance(t, str) for t in self.templates):
            raise ValueError(f"templates must be a set name or a list of strings, got {_short(self.templates)}")
        if isinstance(self.templates, list) and len(self.templates) > MAX_TEMPLATES:
            raise ValueError(f"templates lists {len(self.templates)} templates, over the cap of {MAX_TEMPLATES} "
                             "(each is encoded for every query before detection starts)")
        if self.feature_stride not in (None, 8, 16, 32):
            raise ValueError(f"feature_stride must be null, 8, 16 or 32, got {self.feature_stride!r}")
        _check_rescore(self.rescore, "rescore")
        _check_rescore(self.region_scoring, "region_scoring")


# Numeric keys and their allowed ranges: wide enough for any real model, tight enough that no config
# makes ovdet build gigabytes of layers before it can say no.
_RANGES = {
    "image_size": (16, 4096),
    "box_layers": (1, 8),
    "objectness_layers": (0, 8),
    "context_blocks": (0, 8),
    "threshold": (0.0, 1.0),
    "trainable_layers": (0, 1000),
    "format_version": (1, 10**6),
}
_RESCORE_TYPES = {"topk": int, "weight": (int, float), "novel_weight": (int, float), "context": (int, float),
                  "reference": list}
# region_scoring only: a trained RegionClassifier of the pooled regions and its share of the naming (F-VLM)
_CLASSIFIER_TYPES = {"classifier_hidden": int, "classifier_weight": (int, float), "novel_classifier_weight": (int, float)}


def _check_rescore(rescore: dict | None, key: str) -> None:
    """`rescore` / `region_scoring`: a dict of CropRescorer settings, or None."""
    if rescore is None:
        return
    types = {**_RESCORE_TYPES, **_CLASSIFIER_TYPES} if key == "region_scoring" else _RESCORE_TYPES
    unknown = sorted(set(rescore) - set(types))
    if unknown:
        raise ValueError(f"{key} has unknown key(s) {unknown}; known: {sorted(types)}")
    for name, value in rescore.items():
        if isinstance(value, bool) or not isinstance(value, types[name]):
            raise ValueError(f"{key}.{name} has the wrong type: {value!r}")
    if not 1 <= rescore.get("classifier_hidden", 1) <= 8192:
        raise ValueError(f"{key}.classifier_hidden must be in 1..8192, got {rescore['classifier_hidden']!r}")
    if not 1 <= rescore.get("topk", 32) <= 4096:
        raise ValueError(f"{key}.topk must be in 1..4096, got {rescore['topk']!r}")
    for name in ("weight", "novel_weight", "classifier_weight", "novel_classifier_weight"):
        if not 0 <= rescore.get(name, 0.5) <= 1:
            raise ValueError(f"{key}.{name} must be in 0..1, got {rescore[name]!r}")
    if not all(isinstance(n, str) for n in rescore.get("reference", [])):
        raise ValueError(f"{key}.reference must be a list of names (strings), got {_short(rescore['reference'])}")
    if len(rescore.get("reference", [])) > MAX_REFERENCE_NAMES:
        raise ValueError(f"{key}.reference lists {len(rescore['reference'])} names, over the cap of "
                         f"{MAX_REFERENCE_NAMES} (each is encoded with every template before detection starts)")


def _required(f: dataclasses.Field) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def _check_type(key: str, value, hint) -> None:
    """isinstance against a field's annotation (`int`, `str | list`, `dict | None`, ...); bool is not an int."""
    allowed = typing.get_args(hint) if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union else (hint,)
    allowed = tuple(type(None) if a is None else (typing.get_origin(a) or a) for a in allowed)
    if float in allowed:
        allowed += (int,)
    if (isinstance(value, bool) and bool not in allowed) or not isinstance(value, allowed):
        names = " or ".join("null" if a is type(None) else a.__name__ for a in allowed)
        raise ValueError(f"{key} must be {names}, got {type(value).__name__} {_short(value)}")


def _check_depth(value, where: str, depth: int = 0) -> None:
    """Refuse configs nested deeper than any real one, or with huge lists, before building anything."""
    if depth > MAX_JSON_DEPTH:
        raise ValueError(f"{where} is nested more than {MAX_JSON_DEPTH} levels deep; no model config is")
    if isinstance(value, dict):
        for k, v in value.items():
            _check_depth(v, f"{where}.{k}", depth + 1)
    elif isinstance(value, list):
        if len(value) > MAX_LIST_ITEMS:
            raise ValueError(f"{where} holds {len(value)} items, over {MAX_LIST_ITEMS}")
        for v in value:
            _check_depth(v, where, depth + 1)


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
