"""Input paths checked on the raw argument, before any model loads: local files only, and they must exist.

`Path("https://example.com/cat.jpg")` collapses the '//' into 'https:/example.com/cat.jpg', so a URL
is recognised on the string the user typed, never on a Path made from it.
"""

from __future__ import annotations

import re
from pathlib import Path

from ovdet.errors import OvdetError

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_url(raw: str | Path) -> bool:
    """True for 'https://...', 's3://...', 'file://...': text a Path would mangle."""
    return isinstance(raw, str) and bool(_URL.match(raw.strip()))


def local_path(raw: str | Path, what: str) -> Path:
    """`raw` as a Path; a URL is refused in one line naming it (`what`: how the user gave it, e.g. "image")."""
    if is_url(raw):
        raise OvdetError(f"{what} '{raw}' is a URL; ovdet reads only local files: download it first and pass its path")
    return Path(raw)


def existing_file(raw: str | Path, what: str) -> Path:
    """A local file that exists, or one line naming what is wrong with `raw`."""
    path = local_path(raw, what)
    if not path.exists():
        raise OvdetError(f"{what} '{path}' does not exist")
    if path.is_dir():
        raise OvdetError(f"{what} '{path}' is a folder; name a file")
    return path


def existing_folder(raw: str | Path, what: str) -> Path:
    """A local folder that exists, or one line naming what is wrong with `raw`."""
    path = local_path(raw, what)
    if not path.exists():
        raise OvdetError(f"{what} '{path}' does not exist")
    if not path.is_dir():
        raise OvdetError(f"{what} '{path}' is a file; name the folder that holds the images")
    return path


def existing_file_or_folder(raw: str | Path, what: str) -> Path:
    """A local file or folder that exists (an image argument), or one line naming it."""
    path = local_path(raw, what)
    if not path.exists():
        raise OvdetError(f"{what} '{path}' does not exist")
    return path


def check_templates(spec: str | None) -> None:
    """A `--templates` set name or .json file, resolved now so a bad one is refused before the model loads."""
    if spec is None:
        return
    from ovdet.text.templates import resolve_templates

    local_path(spec, "--templates")
    resolve_templates(spec)
