"""ShapeWorld: a procedural world of coloured shapes for training and measuring open-vocabulary detection.

Scenes of 1..8 shapes (16 kinds, 12 colours, 3 sizes, 4 styles, any rotation, partly occluded)
on textured, cluttered backgrounds, a function of the seed. Boxes come from each object's rendered
coverage after occlusion. 12 shapes are base (boxed in training), 4 novel (only named in captions),
as in the COCO and LVIS open-vocabulary protocols. `shapeworld_dataset` writes COCO-format datasets.
"""

from __future__ import annotations

import colorsys
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ovdet.data.shapeworld_shapes import SHAPES, STYLES, SUPERSAMPLE, shape_alpha

SPLIT_FILE = Path(__file__).with_name("shapeworld_split.json")
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 35),
    "green": (40, 170, 60),
    "blue": (35, 80, 225),
    "yellow": (250, 225, 40),
    "orange": (250, 140, 20),
    "purple": (135, 50, 185),
    "pink": (250, 135, 200),
    "brown": (125, 75, 30),
    "white": (248, 248, 248), "black": (15, 15, 15), "gray": (128, 128, 128), "cyan": (40, 215, 230),
}
SIZES: dict[str, tuple[float, float]] = {"small": (0.14, 0.22), "medium": (0.22, 0.32), "large": (0.32, 0.46)}
"""Size word -> range of the object's diameter as a fraction of the image's short side."""
MIN_RADIUS = 10.0  # px: below this, pentagon, hexagon, octagon and circle blur into one another
MIN_CONTRAST = 100.0  # RGB distance an object's colour keeps from the background's colours
DRAWN = 0.5  # a pixel belongs to an object's box when the object covers at least half of it
MAX_TURN = {"square": 20.0}  # degrees either way: a square turned by 45 degrees reads as a diamond


@dataclass(frozen=True)
class ShapeSplit:
    """The fixed open-vocabulary split of ShapeWorld's shapes into base and novel."""

    base: tuple[str, ...]
    novel: tuple[str, ...]

    def split_of(self, shape: str) -> str:
        return "novel" if shape in self.novel else "base"

    @property
    def shapes(self) -> tuple[str, ...]:
        return tuple(s for s in SHAPES if s in self.base or s in self.novel)


def load_split(path: str | Path | None = None) -> ShapeSplit:
    """Read the split ({"base": [...], "novel": [...]}, json or yaml); default: the packaged one."""
    path = Path(path) if path is not None else SPLIT_FILE
    if not path.is_file():
        raise ValueError(f"ShapeWorld split file '{path}' not found; pass a json or yaml with 'base' and 'novel'")
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml  # PyYAML comes with hydra-core

        data = yaml.safe_load(path.read_text())
    else:
        data = json.loads(path.read_text())
    split = ShapeSplit(base=tuple(data["base"]), novel=tuple(data["novel"]))
    unknown = sorted(set(split.base + split.novel) - set(SHAPES))
    both = sorted(set(split.base) & set(split.novel))
    if unknown or both:
        raise ValueError(f"split '{path}': unknown shapes {unknown}, both base and novel {both}; known: {list(SHAPES)}")
    return split


@dataclass(frozen=True)
class SceneConfig:
    """How scenes are sampled. Sizes are the image's long side in pixels; aspect is short / long."""

    min_size: int = 160
    max_size: int = 320
    min_aspect: float = 0.6
    min_objects: int = 1
    max_objects: int = 8
    min_visible: float = 0.7
    max_distractors: int = 8
    shapes: tuple[str, ...] = tuple(SHAPES)

    def __post_init__(self):
        if not 64 <= self.min_size <= self.max_size:
            raise ValueError(f"need 64 <= min_size <= max_size, got min_size={self.min_size} max_size={self.max_size}")
        if not 0.3 <= self.min_aspect <= 1.0:
            raise ValueError(f"min_aspect must be in [0.3, 1], got {self.min_aspect}")
        if not 1 <= self.min_objects <= self.max_objects <= 10:
            raise ValueError(
                f"need 1 <= min_objects <= max_objects <= 10, got {self.min_objects} and {self.max_objects}"
            )
        if not 0.0 < self.min_visible <= 1.0:
            raise ValueError(f"min_visible is a fraction in (0, 1], got {self.min_visible}")
        if self.max_distractors < 0:
            raise ValueError(f"max_distractors must be >= 0, got {self.max_distractors}")
        unknown = sorted(set(self.shapes) - set(SHAPES))
        if unknown or not self.shapes:
            raise ValueError(f"unknown or no shapes {unknown}; choose from {list(SHAPES)}")


@dataclass(frozen=True)
class ShapeObject:
    """One drawn object: what it is, where it was drawn, and its box from its visible pixels."""

    shape: str
    color: str
    size: str
    style: str
    center_xy: tuple[float, float]
    radius: float  # px; the shape fits in the circle of this radius around its centre
    angle_deg: float
    rgb: tuple[int, int, int]
    box_xyxy: tuple[int, int, int, int] = (0, 0, 0, 0)  # pixel edges, tight around covered pixels
    area: int = 0  # visible pixels (coverage >= 0.5 after occlusion)
    visible: float = 1.0  # fraction of the object's own coverage that no later object hides


@dataclass(frozen=True)
class Scene:
    width: int
    height: int
    objects: tuple[ShapeObject, ...] = field(default_factory=tuple)  # drawing order, back to front


@dataclass
class _Placed:
    """Bookkeeping while a scene is drawn: how much of an object later objects left visible."""

    obj: ShapeObject
    total: float  # the object's own coverage, summed over pixels
    visible: np.ndarray  # [H, W] its coverage times (1 - coverage) of every later object
    left: float  # visible.sum(), kept up to date so placement checks only touch the overlap


def render_scene(seed: int | Sequence[int], config: SceneConfig = SceneConfig()) -> tuple[Image.Image, Scene]:
    """Draw one scene; the same seed always gives the same pixels and the same Scene."""
    rng = np.random.default_rng(_check_seed(seed))
    width, height = _image_size(rng, config)
    background, bg_colors = _background(rng, width, height, config.max_distractors)
    canvas = np.asarray(background, dtype=np.float32).copy()  # [H, W, 3]
    placed: list[_Placed] = []
    for _ in range(int(rng.integers(config.min_objects, config.max_objects + 1))):
        draft = _sample_object(rng, width, height, config, bg_colors)
        spot = _place(rng, draft, placed, width, height, config.min_visible)
        if spot is None:
            continue
        alpha, x0, y0 = spot
        n = alpha.shape[0]
        region = canvas[y0 : y0 + n, x0 : x0 + n]  # [n, n, 3]
        region += (np.array(draft.rgb, np.float32) - region) * alpha[..., None]
        for earlier in placed:
            window = earlier.visible[y0 : y0 + n, x0 : x0 + n]  # [n, n]
            earlier.left -= float((window * alpha).sum())
            window *= 1.0 - alpha
        full = np.zeros((height, width), np.float32)
        full[y0 : y0 + n, x0 : x0 + n] = alpha
        placed.append(_Placed(_moved(draft, x0, y0), float(alpha.sum()), full, float(alpha.sum())))
    canvas += rng.uniform(0.0, 3.0) * rng.standard_normal(canvas.shape, dtype=np.float32)
    image = Image.fromarray(np.clip(canvas + 0.5, 0, 255).astype(np.uint8))
    return image, Scene(width=width, height=height, objects=tuple(_finish(p) for p in placed))


def object_alone(obj: ShapeObject, width: int, height: int) -> np.ndarray:
    """The object's coverage [H, W] as if nothing else were drawn (for checks and masks)."""
    alpha, x0, y0 = shape_alpha(obj.shape, obj.style, obj.center_xy, obj.radius, obj.angle_deg)
    full = np.zeros((height, width), np.float32)
    full[y0 : y0 + alpha.shape[0], x0 : x0 + alpha.shape[1]] = alpha
    return full


def size_word(diameter: float, short_side: int) -> str:
    ratio = diameter / short_side
    return "small" if ratio < SIZES["medium"][0] else "medium" if ratio < SIZES["large"][0] else "large"


def _check_seed(seed: int | Sequence[int]) -> list[int]:
    seeds = [seed] if isinstance(seed, (int, np.integer)) else list(seed)
    if not seeds or any(not isinstance(s, (int, np.integer)) or s < 0 for s in seeds):
        raise ValueError(f"seed must be a non-negative integer or a sequence of them, got {seed!r}")
    return [int(s) for s in seeds]


def _image_size(rng: np.random.Generator, config: SceneConfig) -> tuple[int, int]:
    long_side = int(rng.integers(config.min_size, config.max_size + 1))
    short_side = round(long_side * rng.uniform(config.min_aspect, 1.0))
    return (long_side, short_side) if rng.random() < 0.5 else (short_side, long_side)


def _background(
    rng: np.random.Generator, width: int, height: int, max_distractors: int
) -> tuple[Image.Image, np.ndarray]:
    """A muted gradient with low-frequency texture, pixel noise and thin distractor strokes.

    Returns the image and the gradient's two end colours [2, 3] (objects keep contrast with both).
    """
    hue, sat, val = rng.random(), rng.uniform(0.0, 0.35), rng.uniform(0.3, 0.85)
    ends = [colorsys.hsv_to_rgb(hue, sat, val), colorsys.hsv_to_rgb((hue + rng.uniform(-0.06, 0.06)) % 1, sat, val)]
    ends[1] = tuple(min(1.0, c * rng.uniform(0.8, 1.2)) for c in ends[1])
    start, stop = (np.array(c, np.float32) * 255 for c in ends)
    t = math.tau * rng.random()
    ramp = np.arange(width, dtype=np.float32) * math.cos(t) + np.arange(height, dtype=np.float32)[:, None] * math.sin(t)
    ramp = (ramp - ramp.min()) / max(float(ramp.max() - ramp.min()), 1.0)  # [H, W] in 0..1
    pixels = start + (stop - start) * ramp[..., None]  # [H, W, 3]
    grid = rng.normal(0.0, 1.0, (int(rng.integers(2, 7)), int(rng.integers(2, 7)))).astype(np.float32)
    texture = np.asarray(Image.fromarray(grid, mode="F").resize((width, height), Image.BILINEAR))
    pixels += rng.uniform(0.0, 14.0) * texture[..., None]
    pixels += rng.uniform(1.0, 5.0) * rng.standard_normal(pixels.shape, dtype=np.float32)
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    mean = pixels.mean(axis=(0, 1))
    for _ in range(int(rng.integers(0, max_distractors + 1))):
        color = tuple(int(c) for c in (mean + rng.uniform(0, 255, 3)) / 2)
        points = [tuple(p) for p in rng.uniform(0, 1, (int(rng.integers(2, 5)), 2)) * (width, height)]
        if rng.random() < 0.3:
            box = sorted([points[0], points[-1]])
            box = [box[0][0], min(p[1] for p in box), box[1][0], max(p[1] for p in box)]
            draw.arc(box, *sorted(rng.uniform(0, 360, 2)), fill=color, width=int(rng.integers(1, 3)))
        else:
            draw.line(points, fill=color, width=int(rng.integers(1, 3)))
    return image, np.stack([start, stop])


def _sample_object(
    rng: np.random.Generator, width: int, height: int, config: SceneConfig, bg_colors: np.ndarray
) -> ShapeObject:
    """Attributes, size and a sub-pixel centre; the position is chosen by `_place`."""
    names = list(COLORS)
    rgb = np.array([COLORS[n] for n in names], np.float32)  # [C, 3]
    contrast = np.linalg.norm(rgb[:, None] - bg_colors[None], axis=2).min(axis=1)  # [C]
    allowed = [n for n, c in zip(names, contrast) if c >= MIN_CONTRAST] or names
    color = allowed[rng.integers(len(allowed))]
    short = min(width, height)
    low, high = SIZES[list(SIZES)[rng.integers(len(SIZES))]]
    radius = max(MIN_RADIUS, rng.uniform(low, high) * short / 2)
    radius = math.floor(radius * SUPERSAMPLE) / SUPERSAMPLE  # dyadic: integer shifts keep the mask exact
    offset = rng.integers(0, SUPERSAMPLE, 2) / SUPERSAMPLE
    jitter = rng.integers(-12, 13, 3)
    shape = config.shapes[rng.integers(len(config.shapes))]
    turn = MAX_TURN.get(shape, 180.0)
    return ShapeObject(
        shape=shape,
        color=color,
        size=size_word(2 * radius, short),
        style=STYLES[rng.integers(len(STYLES))],
        center_xy=(radius + 1 + float(offset[0]), radius + 1 + float(offset[1])),  # crop origin (0, 0)
        radius=radius,
        angle_deg=round(float(rng.uniform(-turn, turn)), 1),
        rgb=tuple(int(v) for v in np.clip(np.array(COLORS[color]) + jitter, 0, 255)),
    )


def _place(
    rng: np.random.Generator,
    obj: ShapeObject,
    placed: list[_Placed],
    width: int,
    height: int,
    min_visible: float,
    tries: int = 12,
) -> tuple[np.ndarray, int, int] | None:
    """Try random positions until every earlier object keeps `min_visible` of itself; None if none does.

    Objects of the same colour never touch: overlapping, they would read as one blob.
    """
    alpha, _, _ = shape_alpha(obj.shape, obj.style, obj.center_xy, obj.radius, obj.angle_deg)
    n = alpha.shape[0]
    if n > width or n > height:
        return None
    for _ in range(tries):
        x0, y0 = int(rng.integers(0, width - n + 1)), int(rng.integers(0, height - n + 1))
        hidden = [float((p.visible[y0 : y0 + n, x0 : x0 + n] * alpha).sum()) for p in placed]
        if all(
            p.left - h >= min_visible * p.total and not (h > 0 and p.obj.color == obj.color)
            for p, h in zip(placed, hidden)
        ):
            return alpha, x0, y0
    return None


def _moved(obj: ShapeObject, x0: int, y0: int) -> ShapeObject:
    return replace(obj, center_xy=(obj.center_xy[0] + x0, obj.center_xy[1] + y0))


def _finish(placed: _Placed) -> ShapeObject:
    """Box, area and visible fraction from what is left of the object's coverage."""
    drawn = placed.visible >= DRAWN  # [H, W]
    rows, cols = np.flatnonzero(drawn.any(axis=1)), np.flatnonzero(drawn.any(axis=0))
    assert rows.size and cols.size, "placement keeps every object visible"
    box = (int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1)
    visible = round(float(placed.visible.sum()) / placed.total, 4)
    return replace(placed.obj, box_xyxy=box, area=int(drawn.sum()), visible=visible)
