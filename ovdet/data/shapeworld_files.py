"""The files of a ShapeWorld set on disk: which ones ovdet wrote, and replacing a set without leaving stale ones."""

from __future__ import annotations

import re
from pathlib import Path

INDEX_FILES = ("instances.json", "captions.jsonl", "crops.jsonl")
IMAGE_NAME = re.compile(r"^\d{6,}\.png$")  # images/000042.png
CROP_NAME = re.compile(r"^\d{6,}_\d+\.png$")  # crops/000042_1.png


class DatasetExistsError(ValueError):
    """The output folder already holds a ShapeWorld set, and overwriting was not asked for."""


def written_files(out_dir: str | Path) -> dict[str, list[Path]]:
    """The files under `out_dir` that `write_dataset` writes, by kind: "index" (the json files),
    "images" and "crops". Anything else in the folder is not ovdet's and is never listed."""
    out_dir = Path(out_dir)
    found = {"index": [out_dir / name for name in INDEX_FILES if (out_dir / name).is_file()]}
    for kind, pattern in (("images", IMAGE_NAME), ("crops", CROP_NAME)):
        folder = out_dir / kind
        files = [p for p in folder.iterdir() if p.is_file() and pattern.match(p.name)] if folder.is_dir() else []
        found[kind] = sorted(files)
    return found


def describe(found: dict[str, list[Path]]) -> str:
    """'instances.json, captions.jsonl, 64 images, 2 crops' (kinds with no file left out)."""
    parts = [p.name for p in found["index"]]
    parts += [f"{len(found[kind])} {kind}" for kind in ("images", "crops") if found[kind]]
    return ", ".join(parts)


def clear_output(out_dir: str | Path, overwrite: bool) -> dict[str, list[Path]]:
    """Make `out_dir` ready for a new set; returns what was removed (empty when there was no set).

    Only files ovdet writes are removed (see `written_files`); other files stay, and so do the
    `images/` and `crops/` folders when something else is in them.

    Raises:
        DatasetExistsError: `out_dir` holds ovdet's files and `overwrite` is False; a new set over an
            old one would leave the old images that the new `instances.json` does not list.
    """
    out_dir = Path(out_dir)
    found = written_files(out_dir)
    if not any(found.values()):
        return found
    if not overwrite:
        raise DatasetExistsError(
            f"'{out_dir}' already holds a ShapeWorld set ({describe(found)}); give --overwrite (overwrite=True) "
            "to replace the files ovdet wrote there, or choose another --out"
        )
    for files in found.values():
        for path in files:
            path.unlink()
    for kind in ("images", "crops"):
        folder = out_dir / kind
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
    return found
