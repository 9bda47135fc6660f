"""Where exported and compiled graphs live between runs: one folder per model, runtime, precision and shape.

An export or an int8 calibration takes tens of seconds; a cached graph loads in well under one. The key hashes
everything the graph depends on (the detector's weights, sampled as the text cache samples them, its settings,
the variant, precision, ovdet's and the runtime's versions), so a retrained model or a new ovdet never reads a
stale graph. Folders are built in a temporary sibling and renamed into place whole.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from ovdet import __version__, file_mark

CACHE_ENV = "OVDET_CACHE"


def cache_root() -> Path:
    """`$OVDET_CACHE`, else `$XDG_CACHE_HOME/ovdet`, else `~/.cache/ovdet`."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "ovdet"


def detector_fingerprint(detector) -> str:
    """sha256 of the detector's weights (an evenly strided sample of each tensor) and of its settings."""
    from ovdet.models.text_encoder import tower_fingerprint

    digest = hashlib.sha256(tower_fingerprint(detector).encode())
    digest.update(json.dumps(detector.settings.asdict(), sort_keys=True, default=str).encode())
    return digest.hexdigest()


def graph_folder(detector, runtime: str, precision: str, variant: str, extra: dict | None = None) -> Path:
    """The cache folder of one graph (not created); `extra`: anything else the graph depends on."""
    import torch

    key = {"model": detector_fingerprint(detector), "runtime": runtime, "precision": precision, "variant": variant,
           "image_size": detector.image_size, "ovdet": __version__, "torch": torch.__version__,
           "runtime_version": _version(runtime), **(extra or {})}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
    return cache_root() / "graphs" / f"{runtime}-{precision}-{variant}-{digest}"


def _version(runtime: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(runtime)
    except PackageNotFoundError:
        return ""


def build_once(folder: Path, build) -> Path:
    """`folder` if it is complete (holds `done.json`), else `build(tmp)` into a temporary sibling, renamed into
    place; a failed or interrupted build leaves nothing behind."""
    if (folder / "done.json").is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        build(tmp)
        (tmp / "done.json").write_text(json.dumps(file_mark.marked({"ovdet": __version__})))
        try:
            tmp.rename(folder)
        except OSError:  # another process finished the same graph first: keep theirs
            if not (folder / "done.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder
