"""Prompt-template sets, kept as data in `templates.json` ("{}" is replaced by the query)."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

_TEMPLATE_FILE = Path(__file__).with_name("templates.json")


@lru_cache(maxsize=1)
def template_sets() -> dict[str, tuple[str, ...]]:
    """All named sets: `single` ("{}"), `photo`, `clip7` (CLIP's 7 best), `clip80` (CLIP's 80)."""
    data = json.loads(_TEMPLATE_FILE.read_text())
    return {name: tuple(items) for name, items in data.items()}


def resolve_templates(spec: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Turn a set name, a path to a json list, or a list of templates into a tuple of templates.

    Raises:
        ValueError: unknown set name, or a template without the `{}` placeholder.
    """
    if isinstance(spec, str):
        sets = template_sets()
        if spec in sets:
            return sets[spec]
        path = Path(spec)
        if path.suffix == ".json" and path.is_file():
            spec = json.loads(path.read_text())
        else:
            raise ValueError(
                f"unknown template set {spec!r}; use one of {sorted(sets)} or a .json file with a list of templates"
            )
    templates = tuple(spec)
    if not templates:
        raise ValueError("the template list is empty; give at least one template such as '{}'")
    bad = [t for t in templates if "{}" not in t]
    if bad:
        raise ValueError(f"templates must contain '{{}}' where the query goes: {bad}")
    return templates
