"""The mark of YOLO label files, which cannot carry one: a YOLO reader takes every line of
`labels/NAME.txt` for a box, so a '# written by ovdet' line would break it. Their sha256 are listed
instead in the marked `DIR/labels.meta.json` (as `ovdet.file_mark` does for a JSON list's sidecar)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ovdet import file_mark
from ovdet.safe_write import atomic_write_text

MANIFEST = "labels.meta.json"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def listed_files(out: Path) -> dict[str, list[str]]:
    """{path relative to `out`: [accepted sha256]} from a manifest ovdet wrote ({} when none is ours)."""
    manifest = out / MANIFEST
    if not file_mark.is_ours(manifest):
        return {}
    files = json.loads(manifest.read_text(encoding="utf-8")).get("files", {})
    if not isinstance(files, dict):
        return {}
    return {rel: [sha] if isinstance(sha, str) else list(sha) for rel, sha in files.items()}


def is_listed(out: Path, path: Path, files: dict[str, list[str]]) -> bool:
    """True when `path` (under `out`) is a file that `files` (`listed_files(out)`) lists with its present content."""
    try:
        accepted = files.get(path.relative_to(out).as_posix(), [])
        return bool(accepted) and path.is_file() and not path.is_symlink() and _sha256(path.read_bytes()) in accepted
    except (OSError, ValueError):
        return False


def write_listed(out: Path, contents: dict[Path, str]) -> list[Path]:
    """Write text files under `out` and list them. The manifest first accepts old and new content, then
    only the new: a run killed midway leaves every file it touched still recognised as ovdet's."""
    before = listed_files(out)
    kept = {rel: [s for s in shas if is_listed(out, out / rel, {rel: [s]})] for rel, shas in before.items()}
    kept = {rel: shas for rel, shas in kept.items() if shas}  # files still as ovdet left them
    new = {path.relative_to(out).as_posix(): _sha256(text.encode("utf-8")) for path, text in contents.items()}
    _write(out, {**kept, **{rel: [*kept.get(rel, []), sha] for rel, sha in new.items()}})
    written = [atomic_write_text(path, text) for path, text in contents.items()]
    _write(out, {**kept, **{rel: [sha] for rel, sha in new.items()}})
    return written


def _write(out: Path, files: dict[str, list[str]]) -> None:
    files = {rel: shas[0] if len(shas) == 1 else shas for rel, shas in sorted(files.items())}
    atomic_write_text(out / MANIFEST, json.dumps(file_mark.marked({"files": files}), indent=1))
