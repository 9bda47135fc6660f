"""The ovdet model folder on disk, checked before anything is built from it.

A folder holds `config.json`, the head weights in `model.safetensors` and the CLIP in `clip/`.
Weights are read from safetensors only (a pickle can run code when loaded). `config.json`
records a sha256 per file, so a truncated, corrupt or altered file is named at load time
instead of giving silently wrong boxes; every weights file present must be listed there, and every
name must stay inside the folder. Every problem is one `ModelNotAvailableError`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

import torch
from safetensors.torch import load_file

from ovdet.errors import ModelNotAvailableError, OvdetError
from ovdet.json_file import read_json_file
from ovdet.safe_write import check_replaceable, folder_entries, replace_folder
from ovdet.towers.library_path import library_path

CONFIG_NAME = "config.json"
FORMAT_VERSION = 1
# Every key `Detector.config` writes, with the types it may hold; add new keys here.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
# Files a loader may read weights from: each one in an ovdet folder must have a checksum.
WEIGHT_SUFFIXES = (".safetensors", ".index.json", ".h5", ".msgpack", ".onnx", *PICKLE_SUFFIXES)
# The safetensors files transformers (the first two) and open_clip (the last) load by name.
SAFE_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "open_clip_model.safetensors")
SHA256 = re.compile(r"[0-9a-f]{64}")


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
    config = read_json_file(config_file, fix="; save the model again", error=ModelNotAvailableError)
    if not isinstance(config, dict) or config.get("model_type") != "ovdet":
        return None  # a transformers CLIP folder (model_type "clip"): loaded with a fresh head
    _check_config(config, config_file)
    return config


def _check_config(config: dict, config_file: Path) -> None:
    """Every key against `DetectorConfig` (types from its fields, ranges, nesting), before anything is built."""
    from ovdet.models.detector_config import DetectorConfig

    try:
        DetectorConfig.from_dict(config)
    except ValueError as err:
        raise ModelNotAvailableError(f"'{config_file}': {err}; save the model again or fix the file") from None


def file_checksums(folder: Path) -> dict[str, str]:
    """sha256 of every file under `folder` except its `config.json`, by relative path."""
    return {name: _sha256(inside_name(folder, name, folder)) for name in folder_entries(folder) if name != CONFIG_NAME}


def config_checksum(config: dict) -> str:
    """sha256 of a config's content without its `checksums` key (canonical JSON: sorted keys, no spaces).

    Recorded as `checksums["config.json"]`, so the config (templates, threshold, head shape) is covered
    like every other file although it holds the checksums itself.
    """
    content = json.loads(json.dumps({k: v for k, v in config.items() if k != "checksums"}))  # as read back from disk
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def verify_checksums(folder: Path, checksums: dict[str, str] | None, config: dict | None = None,
                     link_root: Path | None = None) -> None:
    """Refuse an ovdet folder whose files differ from the checksums its config.json recorded.

    Every weights file present (safetensors, pickles, shard indexes) must be listed, so an empty
    or missing `checksums` does not turn the check off; every listed name must stay inside
    `folder` (no `..`, not absolute, no link leading out of `link_root`, default `folder`).
    `config` (the parsed config.json) is checked against `checksums["config.json"]` when that is
    recorded (folders saved before it was are loaded without it).
    """
    config_file = folder / CONFIG_NAME
    checksums = checksums or {}
    entries = folder_entries(folder)
    for name in entries:
        inside_name(folder, name, folder, link_root)  # a link inside the folder must not lead out of it
    unlisted = [n for n in entries if n not in checksums and n.endswith(WEIGHT_SUFFIXES)]
    if unlisted:
        raise ModelNotAvailableError(
            f"'{config_file}' records no checksum for {unlisted[:5]}; ovdet lists every weights file when it saves "
            "a model and checks each one before loading. Save the model again, or, if you trust this folder, "
            f"record its files with `python -c \"from ovdet.models.model_folder import record_checksums; "
            f"record_checksums('{folder}')\"`"
        )
    for name, digest in sorted(checksums.items()):
        path = inside_name(folder, name, config_file, link_root)
        if not isinstance(digest, str) or not SHA256.fullmatch(digest):
            raise ModelNotAvailableError(f"'{config_file}': the checksum of '{name}' is {digest!r}, not a sha256")
        if name == CONFIG_NAME:
            if config is not None and config_checksum(config) != digest:
                raise ModelNotAvailableError(
                    f"'{config_file}' does not match the checksum it recorded for its own content: it was changed "
                    "after saving; save the model again, or, if you trust the change, record it with "
                    f"`python -c \"from ovdet.models.model_folder import record_checksums; record_checksums('{folder}')\"`"
                )
            continue
        if not path.is_file():
            raise ModelNotAvailableError(f"model folder '{folder}' lacks '{name}'; copy the whole folder again")
        if _sha256(path) != digest:
            raise ModelNotAvailableError(
                f"'{path}' does not match the checksum in {CONFIG_NAME}: it is truncated, corrupt or was changed "
                "after saving; copy or save the model again"
            )


def record_checksums(folder: str | Path) -> dict[str, str]:
    """Write the sha256 of every file of an ovdet folder, and of its config's content, into its config.json
    (for a folder you trust)."""
    from ovdet.safe_write import atomic_write_text

    folder = Path(folder)
    config = read_config(folder)
    if config is None:
        raise ModelNotAvailableError(f"'{folder}' is not an ovdet model folder (no config.json of model_type ovdet)")
    config["checksums"] = {**file_checksums(folder), CONFIG_NAME: config_checksum(config)}
    atomic_write_text(folder / CONFIG_NAME, json.dumps(config, indent=2))
    return config["checksums"]


def inside_name(folder: Path, name, source: Path, link_root: Path | None = None) -> Path:
    """`folder / name` for a plain relative name that stays inside `folder` (a link may lead anywhere inside
    `link_root`, default `folder`); refuse any other (named in `source`)."""
    pure = PurePosixPath(name) if isinstance(name, str) else None
    if (pure is None or not name or pure.is_absolute() or ".." in pure.parts or pure.as_posix() != name
            or "\\" in name or "\x00" in name):  # fmt: skip
        raise ModelNotAvailableError(
            f"'{source}' names the file {name!r}; a model folder's files must be plain relative names inside it "
            "(no '..', not absolute): the folder was not written by ovdet or was altered"
        )
    path = folder / name
    root = os.path.realpath(link_root if link_root is not None else folder)
    if not os.path.realpath(path).startswith(root + os.sep):
        raise ModelNotAvailableError(
            f"'{path}' is a link that leads outside the model folder '{folder}'; ovdet reads a model only from "
            "files inside its folder: copy the file in instead of linking it"
        )
    return path


def refuse_pickled_weights(folder: Path) -> None:
    """Refuse a folder holding pickle weights (pytorch_model.bin, *.pt) unless the safetensors a loader reads
    by name are there too (a pickle can run code when loaded); refuse shard indexes naming files outside it."""
    if not folder.is_dir():
        return
    names = {p.name for p in folder.iterdir()}
    for index in sorted(n for n in names if n.endswith(".index.json")):
        _check_shard_index(folder, folder / index)
    pickles = sorted(n for n in names if n.endswith(PICKLE_SUFFIXES) or n.endswith(tuple(
        f"{s}.index.json" for s in PICKLE_SUFFIXES)))  # fmt: skip
    if pickles and not names & set(SAFE_WEIGHTS):
        raise ModelNotAvailableError(
            f"'{folder}' holds weights as pickle files {pickles} and none of {list(SAFE_WEIGHTS)}; ovdet loads "
            "safetensors only, since a pickle can run code when loaded (another *.safetensors file beside them "
            "does not count). Convert a CLIP you trust with "
            "`CLIPModel.from_pretrained(DIR).save_pretrained(DIR)` (writes model.safetensors)"
        )


def _check_shard_index(folder: Path, index: Path) -> None:
    """A `*.index.json` maps tensors to shard files: each must be a safetensors file inside `folder`."""
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8")).get("weight_map")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError) as err:
        raise ModelNotAvailableError(f"'{index}' is not a valid shard index ({err}); copy the model again") from None
    if not isinstance(weight_map, dict):
        raise ModelNotAvailableError(f"'{index}' has no 'weight_map' object; copy the model again")
    odd = [v for v in weight_map.values() if not isinstance(v, str)][:1]  # refused by inside_name
    for shard in odd + sorted({v for v in weight_map.values() if isinstance(v, str)}):
        inside_name(folder, shard, index)
        if index.name.startswith(SAFE_WEIGHTS) and not shard.endswith(".safetensors"):
            raise ModelNotAvailableError(f"'{index}' names the shard {shard!r}, which is not a .safetensors file")


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file, as float32; a truncated or corrupt file is one clear error."""
    if not path.is_file():
        raise ModelNotAvailableError(f"model folder '{path.parent}' has no {path.name}; was it saved completely?")
    try:
        with library_path(path) as readable:  # safetensors opens UTF-8 paths only
            state = load_file(str(readable))
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


def atomic_folder(path: Path):
    """A temp folder beside `path` to write a model into; on success it replaces `path` (see
    `ovdet.safe_write.replace_folder`): a new or empty folder, or an ovdet model folder holding only
    the files ovdet wrote there (config.json and those its checksums list). Any other folder is refused."""
    return replace_folder(Path(path), ovdet_files, "an ovdet model folder")


def check_model_target(path: str | Path) -> None:
    """Refuse now, in one line, a folder `atomic_folder` would refuse when the model is written (call it
    before hours of training, not after)."""
    check_replaceable(Path(path), ovdet_files, "an ovdet model folder")


def ovdet_files(folder: Path) -> set[str] | None:
    """The files ovdet wrote into `folder` (config.json and those its checksums list); None if not an ovdet folder."""
    try:
        config = json.loads((folder / CONFIG_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    checksums = config.get("checksums") if isinstance(config, dict) and config.get("model_type") == "ovdet" else None
    return {CONFIG_NAME, *(k for k in checksums if isinstance(k, str))} if isinstance(checksums, dict) else None
