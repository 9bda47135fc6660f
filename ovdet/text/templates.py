"""Prompt-template sets, kept as data in `templates.json` ("{}" is replaced by the query)."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from ovdet.json_file import read_json_file

_TEMPLATE_FILE = Path(__file__).with_name("templates.json")


@lru_cache(maxsize=1)
def template_sets() -> dict[str, tuple[str, ...]]:
    """All named sets: `single` ("{}"), `photo`, `clip7` (CLIP's 7 best), `clip80` (CLIP's 80)."""
    data = json.loads(_TEMPLATE_FILE.read_text())
    return {name: tuple(items) for name, items in data.items()}


def resolve_templates(spec: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Turn a set name, a path to a json list, or a list of templates into a tuple of templates.

    Raises:
        ValueError: unknown set name, a file that is not a JSON list of strings, or a template
            without exactly one `{}` placeholder (other braces would break `str.format`).
    """
    source = "the template list"
    if isinstance(spec, str):
        sets = template_sets()
        if spec in sets:
            return sets[spec]
        path = Path(spec)
        if path.suffix != ".json":
            raise ValueError(
                f"unknown template set {spec!r}; use one of {sorted(sets)} or a .json file with a list of templates"
            )
        spec, source = _read_template_file(path), f"template file '{path}'"
    if not isinstance(spec, (list, tuple)) or not all(isinstance(t, str) for t in spec):
        raise ValueError(
            f"{source} must be a list of strings such as [\"a photo of a {{}}.\"], got {_describe(spec)}"
        )
    templates = tuple(spec)
    if not templates:
        raise ValueError(f"{source} is empty; give at least one template such as '{{}}'")
    bad = [t for t in templates if not _one_placeholder(t)]
    if bad:
        raise ValueError(
            f"templates must contain '{{}}' once, where the query goes, and no other braces: {bad[:5]} in {source}"
        )
    return templates


def _read_template_file(path: Path):
    if not path.is_file():
        raise ValueError(f"template file '{path}' not found; give a .json list of templates or a set name")
    return read_json_file(path, f"template file '{path}'")


def _one_placeholder(template: str) -> bool:
    try:
        return "{}" in template and template.format("\0").count("\0") == 1
    except (IndexError, KeyError, ValueError):  # "{0}", "{name}", a lone "{"
        return False


def _describe(value) -> str:
    if isinstance(value, (list, tuple)):
        odd = next(t for t in value if not isinstance(t, str))
        return f"a list holding {type(odd).__name__} {odd!r}"
    return f"a JSON {'object' if isinstance(value, dict) else type(value).__name__}"
