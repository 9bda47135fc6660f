"""ShapeWorld captions: natural sentences about the objects a scene really holds.

Captions are the only supervision CLIP gets, so they name novel shapes as freely as base ones
(as real captions name COCO's novel classes). Each sentence only mentions objects that are
drawn; the first caption of a scene mentions every object, with correct counts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from ovdet.data.shapeworld import Scene, ShapeObject

NUMBER_WORDS = ("no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
ATTRIBUTES = ("size", "style", "color")  # the order adjectives take in English: "small striped red"
_LIST_TEMPLATES = (
    "{}.",
    "a picture of {}.",
    "an image with {}.",
    "the picture shows {}.",
    "a photo showing {}.",
    "{} on a cluttered background.",
    "a drawing of {}.",
)
_PHRASE_TEMPLATES = ("{}", "a photo of {}", "{} shape", "an image of {}", "a drawing of {}")


def plural(noun: str) -> str:
    return noun + ("es" if noun.endswith(("s", "x", "ch", "sh")) else "s")


def with_article(words: str) -> str:
    return ("an " if words[0] in "aeiou" else "a ") + words


def describe(obj: ShapeObject, fields: Sequence[str], count: int = 1) -> str:
    """'a small red star', 'two striped circles': the object's shape with the chosen attributes."""
    adjectives = [getattr(obj, f) for f in ATTRIBUTES if f in fields]
    noun = obj.shape if count == 1 else plural(obj.shape)
    words = " ".join([*adjectives, noun])
    return with_article(words) if count == 1 else f"{NUMBER_WORDS[count]} {words}"


def describe_objects(objects: Sequence[ShapeObject], fields: Sequence[str]) -> str:
    """Every object once, alike ones counted together: 'two red circles, a blue star and a ring'."""
    groups: dict[tuple, list[ShapeObject]] = {}
    for obj in objects:
        key = (obj.shape, *(getattr(obj, f) for f in ATTRIBUTES if f in fields))
        groups.setdefault(key, []).append(obj)
    parts = [describe(members[0], fields, len(members)) for members in groups.values()]
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def where(obj: ShapeObject, width: int, height: int) -> str:
    """Coarse position in thirds of the image: 'in the top left corner', 'on the right', ..."""
    col = min(2, int(3 * obj.center_xy[0] / width))
    row = min(2, int(3 * obj.center_xy[1] / height))
    vertical, horizontal = ("top", "", "bottom")[row], ("left", "", "right")[col]
    if vertical and horizontal:
        return f"in the {vertical} {horizontal} corner"
    if vertical:
        return f"at the {vertical}"
    return f"on the {horizontal}" if horizontal else "in the middle"


def relation(a: ShapeObject, b: ShapeObject) -> str:
    """Where a is seen from b, by the larger of the horizontal and vertical offsets."""
    dx, dy = a.center_xy[0] - b.center_xy[0], a.center_xy[1] - b.center_xy[1]
    if abs(dx) >= abs(dy):
        return "to the left of" if dx < 0 else "to the right of"
    return "above" if dy < 0 else "below"


def scene_captions(scene: Scene, rng: np.random.Generator, num: int = 5) -> list[str]:
    """`num` captions; the first names every object, the rest mix lists, counts, places and relations."""
    objects = list(scene.objects)
    captions = [_listing(objects, rng)]
    kinds = [_listing, _counted, _located] + ([_related] if len(objects) > 1 else [])
    for _ in range(8 * num):  # a scene of one plain shape has only so many distinct captions
        if len(captions) == num:
            break
        kind = kinds[rng.integers(len(kinds))]
        caption = kind(objects, rng) if kind is not _located else _located(objects, rng, scene)
        if caption not in captions:
            captions.append(caption)
    return captions + [captions[k % len(captions)] for k in range(num - len(captions))]


def object_phrase(obj: ShapeObject, rng: np.random.Generator) -> str:
    """A short phrase for a single-object crop: 'a red star', 'a photo of a striped hexagon'."""
    fields = [f for f in ("style", "color") if rng.random() < 0.6]
    template = _PHRASE_TEMPLATES[rng.integers(len(_PHRASE_TEMPLATES))]
    return template.format(describe(obj, fields))


def _fields(rng: np.random.Generator) -> list[str]:
    """A random subset of the attributes; colour most often, as people name it first."""
    chances = {"size": 0.4, "style": 0.4, "color": 0.8}
    return [f for f in ATTRIBUTES if rng.random() < chances[f]]


def _listing(objects: list[ShapeObject], rng: np.random.Generator) -> str:
    order = rng.permutation(len(objects))
    body = describe_objects([objects[i] for i in order], _fields(rng))
    return _LIST_TEMPLATES[rng.integers(len(_LIST_TEMPLATES))].format(body)


def _counted(objects: list[ShapeObject], rng: np.random.Generator) -> str:
    total = len(objects)
    noun = "shape" if total == 1 else "shapes"
    return f"{NUMBER_WORDS[total]} {noun}: {describe_objects(objects, _fields(rng))}."


def _located(objects: list[ShapeObject], rng: np.random.Generator, scene: Scene) -> str:
    obj = objects[rng.integers(len(objects))]
    return f"{describe(obj, _fields(rng))} {where(obj, scene.width, scene.height)}."


def _related(objects: list[ShapeObject], rng: np.random.Generator) -> str:
    i, j = rng.choice(len(objects), size=2, replace=False)
    a, b = objects[i], objects[j]
    return f"{describe(a, _fields(rng))} {relation(a, b)} {describe(b, _fields(rng))}."
