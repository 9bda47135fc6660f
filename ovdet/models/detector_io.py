"""Save and load Detectors: ovdet model folders, OWL-ViT / OWLv2 detection folders, bare towers.

Safetensors only; config.json keys, file checksums and weight shapes are checked before anything
is built, so a broken folder is one `ModelNotAvailableError` that names the file (`model_folder`).
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors.torch import save_file

from ovdet.errors import ModelNotAvailableError
from ovdet.models.detector_config import DetectorConfig
from ovdet.models.model_folder import (
    atomic_folder,
    check_state,
    config_checksum,
    file_checksums,
    load_weights,
    one_line_errors,
    read_config,
    refuse_pickled_weights,
    verify_checksums,
)
from ovdet.towers.clip_saving import save_clip
from ovdet.towers.hub_cache import resolve_model
from ovdet.towers.library_path import library_path
from ovdet.towers.loader import load_clip, load_clip_folder

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CLIP_DIR = "clip"
# Parameters that belong to the CLIP itself and are saved in its own folder, not with the head.
CLIP_PREFIXES = ("backbone.vision.", "text_encoder.")


def from_clip(cls, clip: str, image_size: int | None = None, trainable_layers: int = 0, **settings):
    """A `cls` (Detector) with a fresh (untrained) head on a CLIP hub id or folder.

    `image_size` defaults to the CLIP's own training resolution; set it higher to detect small things.
    """
    loaded = load_clip(clip, trainable_layers)
    size = image_size or loaded.backbone.default_image_size
    info = {"untrained": True, **settings.pop("info", {})}
    config = DetectorConfig(clip={"format": loaded.format, "path": str(clip)}, image_size=size,
                            trainable_layers=trainable_layers, info=info, **settings)
    return cls(loaded, config)


@contextmanager
def fp32_weights(detector):
    """The detector's fp32 weights while inside: bf16 (`set_precision`) casts them in place, and a folder must
    hold what the model is, not a rounding of it. The fp32 tensors are the ones kept aside, so nothing is lost."""
    if getattr(detector, "precision", "fp32") != "bf16":
        yield
        return
    requested = detector.__dict__.get("_requested_precision")
    detector.set_precision("fp32")
    try:
        yield
    finally:
        detector.set_precision("bf16")
        if requested is not None:  # "auto" stays what the user asked for
            detector.__dict__["_requested_precision"] = requested


def save_pretrained(detector, path: str | Path, copy_clip: bool = True, dtype: torch.dtype | None = None) -> Path:
    """Write a folder: `config.json`, head weights in `model.safetensors`, the CLIP in `clip/` (or, with
    copy_clip=False and a frozen tower, a reference to its id). Written to a temp folder first and
    moved into place, so a failure never leaves a half-written model."""
    path = Path(path)
    if not copy_clip and getattr(detector.backbone, "trainable_layers", 0) > 0:
        raise ValueError("the vision tower was fine-tuned; save it with copy_clip=True")
    with fp32_weights(detector), atomic_folder(path) as tmp:
        clip_path = CLIP_DIR if copy_clip else detector.clip.reference
        if copy_clip:
            save_clip(detector.clip, tmp / CLIP_DIR, dtype=dtype)
        state = {k: v.detach().to(dtype or v.dtype).contiguous().cpu() for k, v in detector.head_state_dict().items()}
        with library_path(tmp) as folder:  # safetensors writes to UTF-8 paths only
            save_file(state, str(folder / WEIGHTS_NAME))
        config = detector.config(clip_path)
        config["checksums"] = {**file_checksums(tmp), CONFIG_NAME: config_checksum(config)}  # verified by from_pretrained
        (tmp / CONFIG_NAME).write_text(json.dumps(config, indent=2))
    return path


def from_pretrained(cls, path: str | Path, trainable_layers: int | None = None):
    """Load a `cls` (Detector) from an ovdet folder; an OWL-ViT / OWLv2 detection folder as its own
    detector; a plain tower (CLIP, OpenCLIP, SigLIP id or folder) with an untrained head. A hub id is
    its snapshot in the local cache, resolved first, so each of these is recognised by id as by path."""
    source = resolve_model(path)
    path = source.folder
    config = read_config(path)
    if config is None:
        from ovdet.towers.owl import is_owl_detection_folder, load_owl_detector

        refuse_pickled_weights(path)
        if is_owl_detection_folder(path):
            return load_owl_detector(cls, path, trainable_layers or 0, reference=source.reference)
        with one_line_errors(path):
            return from_clip(cls, source.reference, trainable_layers=trainable_layers or 0)
    verify_checksums(path, config.get("checksums"), config=config, link_root=source.link_root)
    clip_path = _clip_folder(path, config["clip"]["path"])
    refuse_pickled_weights(clip_path)
    layers = config.get("trainable_layers", 0) if trainable_layers is None else trainable_layers
    with one_line_errors(clip_path):
        clip = load_clip_folder(clip_path, str(clip_path), layers)
    try:
        det = cls(clip, DetectorConfig.from_dict({**config, "trainable_layers": layers}))
    except ValueError as err:
        raise ModelNotAvailableError(f"'{path / CONFIG_NAME}' describes no valid model: {err}") from None
    weights = path / WEIGHTS_NAME
    state = load_weights(weights)
    check_state(det, state, weights, ignore=CLIP_PREFIXES)
    det.load_state_dict(state, strict=False)
    return det.eval()


def _clip_folder(model_dir: Path, reference: str) -> Path:
    """The CLIP a model folder names: a plain name inside the folder (checksummed with it). A reference
    outside (absolute, `..`) is refused: it was never verified with this model."""
    inside = (model_dir / reference).resolve()
    if not Path(reference).is_absolute() and ".." not in Path(reference).parts and inside.is_relative_to(model_dir.resolve()):
        if inside.is_dir():
            return model_dir / reference
    raise ModelNotAvailableError(
        f"'{model_dir / CONFIG_NAME}' names its CLIP as {reference!r}, which is not a folder inside the model folder; "
        "ovdet only loads a CLIP saved (and checksummed) with the model: save it with copy_clip=True"
    )
