"""The ovdet model folder on disk, checked before anything is built from it.

A folder holds `config.json`, the head weights in `model.safetensors` and the CLIP in `clip/`.
Weights are read from safetensors only (a pickle can run code when loaded). `config.json`
records a sha256 per file, so a truncated, corrupt or altered file is named at load time
instead of giving silently wrong boxes. Every problem is one `ModelNotAvailableError`.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors.torch import load_file

from ovdet.errors import ModelNotAvailableError, OvdetError

CONFIG_NAME = "config.json"
FORMAT_VERSION = 1
# Every key `Detector.config` writes, with the types it may hold; add new keys here.
CONFIG_TYPES: dict[str, tuple[type, ...]] = {
    "model_type": (str,),
    "format_version": (int,),
    "clip": (dict,),
    "image_size": (int,),
    "box_layers": (int,),
    "context_blocks": (int,),
    "templates": (str, list),
    "trainable_layers": (int,),
    "rescore": (dict, type(None)),
    "feature_stride": (int, type(None)),
    "info": (dict, type(None)),
    "checksums": (dict,),
}
REQUIRED_KEYS = ("clip", "image_size")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")


def read_config(folder: Path) -> dict | None:
    """The checked `config.json` of an ovdet folder; None when `folder` is not one (a CLIP id or folder)."""
    config_file = folder / CONFIG_NAME
    if not config_file.is_file():
        if (folder / "clip").is_dir():
            raise ModelNotAvailableError(
                f"model folder '{folder}' has a clip/ folder but no {CONFIG_NAME}; it was not saved completely: "
                "save it again (Detector.save_pretrained or `ovdet export-ckpt`)"
            )
        return None
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ModelNotAvailableError(f"'{config_file}' is not valid JSON ({err}); save the model again") from None
    if not isinstance(config, dict) or config.get("model_type") != "ovdet":
        return None  # a transformers CLIP folder (model_type "clip"): loaded with a fresh head
    _check_config(config, config_file)
    return config


def _check_config(config: dict, config_file: Path) -> None:
    version = config.get("format_version", FORMAT_VERSION)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ModelNotAvailableError(
            f"'{config_file}' has format_version {version!r}; this ovdet reads up to {FORMAT_VERSION}: upgrade ovdet"
        )
    unknown = sorted(set(config) - set(CONFIG_TYPES))
    if unknown:
        raise ModelNotAvailableError(
            f"'{config_file}' has unknown key(s) {unknown}; known keys are {sorted(CONFIG_TYPES)} "
            "(a typo, or a model from a newer ovdet)"
        )
    missing = [k for k in REQUIRED_KEYS if k not in config]
    if missing:
        raise ModelNotAvailableError(f"'{config_file}' lacks {missing}; save the model again")
    for key, value in config.items():
        types = CONFIG_TYPES[key]
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            names = " or ".join("null" if t is type(None) else t.__name__ for t in types)
            raise ModelNotAvailableError(f"'{config_file}': {key} must be {names}, got {value!r}")
    if not isinstance(config["clip"].get("path"), str):
        raise ModelNotAvailableError(
            f"'{config_file}': clip.path must name the CLIP folder or id, got {config['clip']!r}"
        )
    _check_rescore(config.get("rescore"), config_file)


def _check_rescore(rescore: dict | None, config_file: Path) -> None:
    from ovdet.models.crop_rescorer import CropRescorer

    allowed = set(inspect.signature(CropRescorer).parameters) - {"logit_scale"}
    unknown = sorted(set(rescore or {}) - allowed)
    if unknown:
        raise ModelNotAvailableError(f"'{config_file}': rescore has unknown key(s) {unknown}; known: {sorted(allowed)}")


def file_checksums(folder: Path) -> dict[str, str]:
    """sha256 of every file under `folder` except its `config.json`, by relative path."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.relative_to(folder).as_posix() != CONFIG_NAME)
    return {p.relative_to(folder).as_posix(): _sha256(p) for p in files}


def verify_checksums(folder: Path, checksums: dict[str, str] | None) -> None:
    """Refuse a folder whose files differ from the checksums its config.json recorded (none: not checked)."""
    for name, digest in sorted((checksums or {}).items()):
        path = folder / name
        if not path.is_file():
            raise ModelNotAvailableError(f"model folder '{folder}' lacks '{name}'; copy the whole folder again")
        if _sha256(path) != digest:
            raise ModelNotAvailableError(
                f"'{path}' does not match the checksum in {CONFIG_NAME}: it is truncated, corrupt or was changed "
                "after saving; copy or save the model again"
            )


def refuse_pickled_weights(folder: Path) -> None:
    """A folder with weights only as pickles (pytorch_model.bin, *.pt) is refused: loading a pickle can run code."""
    if not folder.is_dir() or any(folder.glob("*.safetensors")):
        return
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        raise ModelNotAvailableError(
            f"'{folder}' holds weights only as pickle files {pickles}; ovdet loads safetensors only, since a pickle "
            "can run code when loaded. Convert a CLIP you trust with "
            "`CLIPModel.from_pretrained(DIR).save_pretrained(DIR)` (writes model.safetensors)"
        )


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file, as float32; a truncated or corrupt file is one clear error."""
    if not path.is_file():
        raise ModelNotAvailableError(f"model folder '{path.parent}' has no {path.name}; was it saved completely?")
    try:
        state = load_file(str(path))
    except Exception as err:  # safetensors raises its own SafetensorError (not an OSError) on a broken header
        raise ModelNotAvailableError(
            f"'{path}' is not a readable safetensors file ({err}); it is truncated or corrupt: save or copy it again"
        ) from None
    return {k: v.float() for k, v in state.items()}


def check_state(model: torch.nn.Module, state: dict[str, torch.Tensor], path: Path, ignore: tuple[str, ...]) -> None:
    """Refuse weights that do not fit `model`: wrong shapes, missing or unexpected names, NaN or inf values.

    Args:
        ignore: name prefixes the file need not hold (the CLIP's, loaded from its own folder).
    """
    expected = model.state_dict()
    wrong = [(k, tuple(v.shape), tuple(expected[k].shape)) for k, v in state.items() if k in expected
             and v.shape != expected[k].shape]
    if wrong:
        name, got, want = wrong[0]
        raise ModelNotAvailableError(
            f"'{path}' does not fit the model its {CONFIG_NAME} describes: '{name}' is {list(got)} in the file but the "
            f"model needs {list(want)} ({len(wrong)} tensor(s) differ); the weights and config.json do not belong "
            "together"
        )
    missing = [k for k in expected if k not in state and not k.startswith(ignore)]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        raise ModelNotAvailableError(
            f"'{path}' does not match this model: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    bad = [k for k, v in state.items() if not torch.isfinite(v).all()]
    if bad:
        raise ModelNotAvailableError(
            f"'{path}' holds NaN or infinite values in {bad[:5]}; it is corrupt: save it again"
        )


@contextmanager
def one_line_errors(source: Path) -> Iterator[None]:
    """Turn whatever a library raises on a broken model (safetensors, transformers, open_clip) into one
    `ModelNotAvailableError` naming `source`."""
    try:
        yield
    except OvdetError:
        raise
    except Exception as err:
        first = str(err).strip().splitlines()[0][:300] if str(err).strip() else ""
        raise ModelNotAvailableError(
            f"'{source}' cannot be loaded ({type(err).__name__}: {first}); it is corrupt or incomplete: "
            "save or copy it again"
        ) from None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@contextmanager
def atomic_folder(path: Path) -> Iterator[Path]:
    """A temp folder beside `path` to write into; on success it replaces `path` (dirs 0755, files
    0644, for everyone to read), on failure it is removed, so no half-written model is ever left."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}-", dir=path.parent))
    try:
        yield tmp
        for item in [tmp, *tmp.rglob("*")]:  # mkdtemp is private (0700)
            item.chmod(0o755 if item.is_dir() else 0o644)
        if path.exists():
            shutil.rmtree(path)
        tmp.rename(path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
