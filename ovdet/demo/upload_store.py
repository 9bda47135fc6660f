"""The folder Gradio keeps uploads (and the page's outputs) in, held under a total size and an age.

Gradio writes every upload, every base64 image posted to the API and every output image into
its cache folder (`GRADIO_TEMP_DIR`), and by itself keeps them until the server stops. The demo
points that folder into its own work folder and prunes it: files older than `max_age_s` go, then
the oldest files until the total is under `max_bytes`. Files present when the page was built
(example scenes Gradio copied there) are pinned and never pruned.
"""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(b|kb|mb|gb)?\s*$", re.IGNORECASE)
_UNITS = {"b": 1, "kb": 1024, "mb": 1024**2, "gb": 1024**3}


def parse_size(text: str | int, what: str = "size") -> int:
    """'200mb' / '500kb' / '1gb' / 1024 -> bytes (1 kb = 1024 bytes, as Gradio's max_file_size)."""
    if isinstance(text, int):
        value = text
    else:
        match = _SIZE.match(str(text))
        if not match:
            raise ValueError(f"{what} {text!r} is not a size like 200mb, 500kb or 1gb")
        value = int(float(match[1]) * _UNITS[(match[2] or "b").lower()])
    if value <= 0:
        raise ValueError(f"{what} must be > 0 bytes, got {text!r}")
    return value


class UploadStore:
    """Keep `root` under `max_bytes` in all and drop files older than `max_age_s`, oldest first.

    Args:
        root: the folder Gradio caches uploads and outputs in (made here).
        max_bytes: total size kept; older files are deleted to stay under it.
        max_age_s: files older than this are deleted whatever the total.
        on_delete: called with the paths (str) deleted by a prune, e.g. so Gradio forgets their names.
    """

    def __init__(self, root: Path, max_bytes: int, max_age_s: float = 900.0, on_delete=None):
        if max_bytes <= 0 or max_age_s <= 0:
            raise ValueError(f"upload storage needs max_bytes > 0 and max_age_s > 0, got {max_bytes}, {max_age_s}")
        self.root, self.max_bytes, self.max_age_s = Path(root), int(max_bytes), float(max_age_s)
        self.root.mkdir(parents=True, exist_ok=True)
        self.pinned: set[Path] = set()
        self._lock = threading.Lock()
        self._last = 0.0
        self.on_delete = on_delete

    def pin_existing(self) -> None:
        """Never prune the files there now (Gradio's copies of the example scenes)."""
        self.pinned = {p for p in self.root.rglob("*") if p.is_file()}

    def total_bytes(self) -> int:
        return sum(size for _, size, _ in self._files())

    def prune(self, min_interval_s: float = 0.0) -> int:
        """Delete what is over the age or the total; returns the bytes freed. With `min_interval_s`,
        skipped when the last prune was more recent (cheap enough to call on every request)."""
        now = time.time()
        if min_interval_s and (now - self._last < min_interval_s or not self._lock.acquire(blocking=False)):
            return 0
        if not min_interval_s:
            self._lock.acquire()
        try:
            self._last = now
            files = sorted(self._files())  # oldest first
            total = sum(size for _, size, _ in files)
            freed, deleted = 0, set()
            for mtime, size, path in files:
                if total <= self.max_bytes and now - mtime <= self.max_age_s:
                    continue
                path.unlink(missing_ok=True)
                total, freed = total - size, freed + size
                deleted.add(str(path))
            self._remove_empty_folders(now)
            if deleted and self.on_delete is not None:
                self.on_delete(deleted)
            return freed
        finally:
            self._lock.release()

    def _files(self) -> list[tuple[float, int, Path]]:
        files = []
        for path in self.root.rglob("*"):
            try:
                if path.is_file() and path not in self.pinned:
                    stat = path.stat()
                    files.append((stat.st_mtime, stat.st_size, path))
            except OSError:  # deleted meanwhile (Gradio moves its upload temp files)
                continue
        return files

    def _remove_empty_folders(self, now: float) -> None:
        for folder in sorted((p for p in self.root.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
            try:
                if now - folder.stat().st_mtime > 60:  # not one Gradio has just made for an upload
                    folder.rmdir()  # only when empty
            except OSError:
                pass
