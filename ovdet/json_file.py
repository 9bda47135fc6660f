"""Reading a JSON file a user handed us: one parse, one error that names the file and the fix."""

from __future__ import annotations

import json
from pathlib import Path


def read_json_file(path: str | Path, label: str | None = None, fix: str = "", error: type[Exception] = ValueError):
    """The parsed content of `path` (UTF-8), any JSON value.

    A file that is not UTF-8 JSON raises `error(f"{label} is not valid JSON (<parser message>){fix}")`;
    `label` defaults to the quoted path. Checking the value's type is the caller's: its message says
    what the file should have held.
    """
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        label = label or f"'{path}'"
        raise error(f"{label} is not valid JSON ({err}){fix}") from None
