"""A path every library can open, whatever bytes its folder's name holds.

safetensors (Rust) and tokenizers take paths as UTF-8 strings and refuse a folder named with other
bytes (e.g. Latin-1 `caf\xe9`, which Python holds as a surrogate escape), so a valid model there
looked corrupt. Such a folder is opened through a temporary link with a UTF-8 name; messages keep
naming the user's folder.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def is_utf8(path: str | Path) -> bool:
    """True when the path's name is valid UTF-8 (what Rust-backed libraries require)."""
    try:
        os.fspath(path).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@contextmanager
def library_path(path: str | Path) -> Iterator[Path]:
    """`path` itself, or for a non-UTF-8 name a UTF-8 link to it, valid inside the `with` block (to write, pass
    the folder: a library may replace a linked file instead of writing through it)."""
    path = Path(path)
    if is_utf8(path):
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="ovdet-link-") as tmp:
        link = Path(tmp) / ("model" + "".join(s for s in path.suffixes if is_utf8(s)))
        link.symlink_to(path.absolute(), target_is_directory=path.is_dir())
        yield link
