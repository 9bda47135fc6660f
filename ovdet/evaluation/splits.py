"""Base/novel category splits for open-vocabulary evaluation, kept as data."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

SPLITS_DIR = Path(__file__).with_name("splits")
BUILTIN_SPLITS = ("ovcoco", "lvis")


@dataclass(frozen=True)
class Split:
    """Which category names are novel and which are base.

    `base=None` means "every category that is not novel". Categories in neither set
    (e.g. the 15 COCO classes outside OV-COCO's 48+17) are left out of the headline numbers.
    """

    name: str
    novel: frozenset[str]
    base: frozenset[str] | None = None

    def __post_init__(self):
        both = sorted(self.novel & (self.base or frozenset()))
        if both:
            raise ValueError(f"split '{self.name}' lists categories as both base and novel: {both}")

    def group_of(self, category_name: str) -> str:
        """'novel', 'base' or 'other' (not evaluated in the headline numbers)."""
        if category_name in self.novel:
            return "novel"
        if self.base is None or category_name in self.base:
            return "base"
        return "other"

    def check(self, categories: Sequence[dict]) -> None:
        """Raise ValueError naming every split name that is not a category of the ground truth."""
        known = {c["name"] for c in categories}
        unknown = sorted((self.novel | (self.base or frozenset())) - known)
        if unknown:
            raise ValueError(
                f"split '{self.name}' names categories that are not in the ground truth: {unknown}; "
                "use the exact 'name' of the categories in the annotation json"
            )


def load_split(
    spec: str | Path | Sequence[str] | Split | None,
    categories: Sequence[dict] | None = None,
) -> Split | None:
    """Resolve a split spec and, when `categories` are given, check its names against them.

    spec: "ovcoco" (OVR-CNN 48/17), "lvis" (novel = rare, by each category's `frequency`),
    a .json/.yaml/.txt file, a comma-separated string or a list of novel names, a Split,
    or None: then categories carrying `"split": "base"|"novel"` define it (None if none do).
    """
    if spec is None:
        return split_from_categories(categories or [])
    if isinstance(spec, Split):
        split = spec
    elif isinstance(spec, (list, tuple, frozenset, set)):
        split = Split(name="custom", novel=_names(spec))
    elif str(spec) == "lvis":
        split = _lvis_rule(categories)
    elif str(spec) in BUILTIN_SPLITS:
        split = _split_file(SPLITS_DIR / f"{spec}.json")
    elif Path(spec).suffix.lower() in (".json", ".yaml", ".yml", ".txt"):
        split = _split_file(Path(spec))
    else:
        split = Split(name="custom", novel=_names(str(spec).split(",")))
    if categories is not None:
        split.check(categories)
    return split


def split_from_categories(categories: Sequence[dict]) -> Split | None:
    """The split written into the ground truth itself (`"split"` on each category), or None."""
    marked = {c["name"]: c["split"] for c in categories if "split" in c}
    if not marked:
        return None
    bad = {n: s for n, s in marked.items() if s not in ("base", "novel")}
    if bad:
        raise ValueError(f"category 'split' must be 'base' or 'novel', got {bad}")
    novel = frozenset(n for n, s in marked.items() if s == "novel")
    return Split(name="annotations", novel=novel, base=frozenset(marked) - novel)


def _lvis_rule(categories: Sequence[dict] | None) -> Split:
    """LVIS protocol: rare categories (frequency 'r') are novel, common and frequent are base."""
    if not categories or any("frequency" not in c for c in categories):
        raise ValueError(
            "split 'lvis' needs the ground truth's categories with their 'frequency' (r/c/f); "
            "pass an LVIS annotation json"
        )
    novel = frozenset(c["name"] for c in categories if c["frequency"] == "r")
    return Split(name="lvis", novel=novel, base=frozenset(c["name"] for c in categories) - novel)


def _split_file(path: Path) -> Split:
    """Read {"novel": [...], "base": [...]} (json or yaml), a json list, or one novel name a line (txt)."""
    if not path.is_file():
        raise ValueError(f"split file '{path}' not found; give 'ovcoco', 'lvis', a file or novel names")
    text = path.read_text()
    if path.suffix.lower() == ".txt":
        lines = (line.split("#")[0] for line in text.splitlines())
        return Split(name=path.stem, novel=_names(lines))
    if path.suffix.lower() == ".json":
        data = json.loads(text)
    else:
        import yaml  # PyYAML comes with hydra-core

        data = yaml.safe_load(text)
    if isinstance(data, list):
        return Split(name=path.stem, novel=_names(data))
    if not isinstance(data, dict) or "novel" not in data:
        raise ValueError(f"split file '{path}' must hold a list of novel names or a mapping with 'novel'")
    base = _names(data["base"]) if data.get("base") is not None else None
    return Split(name=data.get("name", path.stem), novel=_names(data["novel"]), base=base)


def _names(items) -> frozenset[str]:
    names = frozenset(str(n).strip() for n in items if str(n).strip())
    if not names:
        raise ValueError("a split needs at least one novel category name")
    return names
