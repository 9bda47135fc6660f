"""Which photos an index run must (re)encode: new or changed files only; files no longer given are dropped.

A file is unchanged when its size and mtime match the index's entry; when they do not, its sha256 decides
(a copied-back or touched file is not encoded again). The index mirrors the PHOTOS of its latest run.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Changes:
    """keep: positions in the old index's `images` to keep (their entries refreshed in `refreshed`);
    encode: file entries (path, bytes, mtime_ns, sha256) to encode, each new or changed;
    changed: the paths of `encode` that replace an entry of the same path; removed: paths dropped."""

    keep: list[int] = field(default_factory=list)
    refreshed: dict[int, dict] = field(default_factory=dict)
    encode: list[dict] = field(default_factory=list)
    changed: set[str] = field(default_factory=set)
    removed: list[str] = field(default_factory=list)

    @property
    def nothing_to_do(self) -> bool:
        return not (self.encode or self.removed or self.refreshed)


def file_entry(path: str | Path, with_hash: bool = True) -> dict:
    """{path (absolute), bytes, mtime_ns, sha256} of a file on disk."""
    stat = os.stat(path)
    entry = {"path": os.path.abspath(path), "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    if with_hash:
        entry["sha256"] = sha256_file(path)
    return entry


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def plan_changes(old_images: list[dict], paths: list[str]) -> Changes:
    """Compare the index's image entries with the files of this run (existing files; duplicates collapse)."""
    by_path = {img["path"]: i for i, img in enumerate(old_images)}
    changes = Changes()
    seen: set[str] = set()
    for path in paths:
        entry = file_entry(path, with_hash=False)
        if entry["path"] in seen:
            continue
        seen.add(entry["path"])
        i = by_path.get(entry["path"])
        old = old_images[i] if i is not None else None
        if old is not None and (old["bytes"], old["mtime_ns"]) == (entry["bytes"], entry["mtime_ns"]):
            changes.keep.append(i)
            continue
        entry["sha256"] = sha256_file(path)
        if old is not None and old.get("sha256") == entry["sha256"]:
            changes.keep.append(i)
            changes.refreshed[i] = {**old, "bytes": entry["bytes"], "mtime_ns": entry["mtime_ns"]}
            continue
        changes.encode.append(entry)
        if old is not None:
            changes.changed.add(entry["path"])
    changes.removed = [img["path"] for img in old_images if img["path"] not in seen]
    return changes
