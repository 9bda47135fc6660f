"""Paths in a training config: packaged assets, and relative paths read from where `ovdet train` was started.

Hydra may change the working directory (`hydra.job.chdir=true`) and a relative path such as
`artifacts/shapeworld_clip` also looks like a hub id (`org/name`). Both are settled once, before
anything is built: every relative path becomes absolute against the directory the user started in,
and a `model.clip` (or `model.path`) that is no folder is a hub id only when that id is in the local
cache.
"""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

from ovdet.errors import ModelNotAvailableError

ASSETS = Path(__file__).resolve().parents[1] / "assets"
DATA_PATH_KEYS = ("train_json", "train_images", "val_json", "val_images")
MODEL_PATH_KEYS = ("clip", "path")  # Detector.from_clip(clip=...), Detector.from_pretrained(path=...)
LIGHTNING_CKPT_NAMES = ("last", "best", "hpc", "registry")  # resolved by `ovdet.training.resume` / Lightning


def asset_path(name: str) -> str:
    """The absolute path of a file or folder shipped in `ovdet/assets` (`${ovdet.asset:default_model/clip}`)."""
    path = ASSETS / name
    if not path.exists():
        raise FileNotFoundError(f"ovdet has no packaged asset '{name}' (looked for '{path}')")
    return str(path)


def register_resolvers() -> None:
    """Register the config resolvers ovdet's YAML files use; called by the entry points, not at import."""
    OmegaConf.register_new_resolver("ovdet.asset", asset_path, replace=True)


def original_cwd() -> Path:
    """The directory `ovdet train` was started in, also when Hydra changed into the run folder."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.cwd)
    return Path.cwd()


def absolute(value: str | os.PathLike, cwd: Path) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else cwd / path


def resolve_paths(cfg: DictConfig, cwd: Path | None = None) -> None:
    """Make the config's data paths, `model.clip` and `ckpt_path` absolute, in place (see module doc).

    Raises:
        ModelNotAvailableError: `model.clip` is neither an existing folder nor a cached hub id.
    """
    cwd = Path(cwd) if cwd is not None else original_cwd()
    with open_dict(cfg):
        data = cfg.get("data")
        for key in DATA_PATH_KEYS:
            if isinstance(data, DictConfig) and isinstance(data.get(key), str):
                data[key] = str(absolute(data[key], cwd))
        model = cfg.get("model")
        for key in MODEL_PATH_KEYS:
            if isinstance(model, DictConfig) and key in model and isinstance(model.get(key), str):
                model[key] = resolve_model(model[key], cwd, f"model.{key}")
        ckpt = cfg.get("ckpt_path")
        if isinstance(ckpt, str) and ckpt not in LIGHTNING_CKPT_NAMES:
            cfg.ckpt_path = str(absolute(ckpt, cwd))


def resolve_model(value: str, cwd: Path, key: str = "model.clip") -> str:
    """An existing folder (made absolute), or a hub id that is in the local cache; anything else is refused."""
    folder = absolute(value, cwd)
    if folder.exists():
        return str(folder)
    if _is_cached_hub_id(value):
        return value
    raise ModelNotAvailableError(
        f"{key} '{value}' is not a folder ('{folder}' does not exist; relative paths are read from the "
        "directory ovdet train was started in) nor a hub model in the local cache (nothing is downloaded); "
        f"set {key} to a model folder"
    )


def _is_cached_hub_id(value: str) -> bool:
    if value.startswith((".", "/", "~")) or value.count("/") != 1:
        return False
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(value, "config.json"), str)
    except Exception:  # an id the hub client refuses to parse is no cached id
        return False
