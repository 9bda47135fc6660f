"""What the user named (`--model`, `Detector.from_pretrained`, a config's `clip`) as a local folder, once.

A hub id (`org/name`) becomes its snapshot folder in the local Hugging Face cache
(`HF_HOME/hub/models--org--name/snapshots/<hash>`, the one `refs/main` names), found by
huggingface_hub itself; every loader then sees a folder, so OWL detection folders, OpenCLIP,
SigLIP and ovdet folders are recognised the same way whether named by path or by id. Nothing is
downloaded unless the user opted in with OVDET_ALLOW_DOWNLOAD=1.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from ovdet.errors import ModelNotAvailableError

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")  # org/name
# What a download (only with OVDET_ALLOW_DOWNLOAD=1) fetches: configs, safetensors, tokenizer files; never pickles.
DOWNLOAD_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model", "*.tiktoken"]


@dataclass(frozen=True)
class ModelSource:
    """A model as a local folder.

    folder: where its files are (a hub id's cache snapshot, or the folder named).
    reference: what the user named (kept in saved configs and cache identities).
    link_root: files of `folder` may be links into this folder (a snapshot's links point into its repo's blobs/).
    """

    folder: Path
    reference: str
    link_root: Path


def allow_download() -> bool:
    """Hub downloads happen only when the user asks for them with OVDET_ALLOW_DOWNLOAD=1."""
    return os.environ.get("OVDET_ALLOW_DOWNLOAD") == "1"


def resolve_model(name: str | Path) -> ModelSource:
    """A folder that exists (as given, `~` expanded), else a hub id's cached snapshot, else one clear error."""
    given = os.fspath(name)
    path = Path(given).expanduser()
    reference = str(path) if given.startswith("~") else given
    if path.exists():
        return ModelSource(folder=path, reference=reference, link_root=_repo_of_snapshot(path) or path)
    if not HUB_ID.match(given):
        raise ModelNotAvailableError(f"model '{given}' does not exist: it is no folder here and no hub id (org/name)")
    snapshot = _snapshot(given)
    return ModelSource(folder=snapshot, reference=given, link_root=snapshot.parent.parent)


def _snapshot(repo_id: str) -> Path:
    """The snapshot folder of `repo_id` that the cache's refs/main names (downloaded only when allowed)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.utils import disable_progress_bars

    disable_progress_bars()
    try:
        found = snapshot_download(repo_id, cache_dir=_cache_dir(), local_files_only=not allow_download(),
                                  allow_patterns=DOWNLOAD_PATTERNS)
    except Exception as err:  # LocalEntryNotFoundError, an unreachable hub, an id the client refuses
        raise not_cached(repo_id, err) from None
    return Path(found)


def _repo_of_snapshot(path: Path) -> Path | None:
    """The cache repo folder (`models--org--name`) when `path` is one of its snapshots, given as a path."""
    repo = path.absolute().parent.parent
    if path.absolute().parent.name == "snapshots" and repo.name.startswith("models--") and (repo / "blobs").is_dir():
        return repo
    return None


def _cache_dir() -> str | None:
    """The hub cache as the environment names it now (huggingface_hub reads HF_HOME once, at import)."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.path.expanduser(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HF_HOME"):
        return os.path.join(os.path.expanduser(os.environ["HF_HOME"]), "hub")
    return None  # the library's own default (~/.cache/huggingface/hub)


def not_cached(name: str, err: Exception | None = None) -> ModelNotAvailableError:
    """One line: the id is not in the local cache, and how to point at a local folder instead."""
    why = f"  [{err.__class__.__name__}]" if err is not None else ""
    allow = "" if allow_download() else " (or set OVDET_ALLOW_DOWNLOAD=1 where a hub can be reached)"
    return ModelNotAvailableError(
        f"model '{name}' is not available offline (no model hub can be reached and it is not in the local cache); "
        f"download it on a machine with access (e.g. `AutoModel.from_pretrained('{name}').save_pretrained('DIR')` "
        f"and the same for AutoTokenizer) and pass --model DIR{allow}{why}"
    )
