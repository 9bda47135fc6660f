"""ShapeWorld shape drawing: unit-size outlines of the 16 shapes and their anti-aliased masks.

Every shape is a list of polygons in unit coordinates (it fits in the unit circle around the
origin, so any rotation of a shape of radius r stays within r of its centre). A polygon either
adds area or cuts it (the hole of a ring, the bite of a crescent). Masks are drawn with PIL at
`SUPERSAMPLE` times the final resolution and averaged down, so edges are anti-aliased and the
coverage of a pixel is a real fraction.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

SUPERSAMPLE = 4
STYLES = ("solid", "outlined", "striped", "dotted")

Polygon = tuple[np.ndarray, bool]  # ([N, 2] xy points, True = adds area / False = cuts it)


def _regular(n: int, radius: float = 1.0, phase: float = -math.pi / 2) -> np.ndarray:
    t = phase + 2 * math.pi * np.arange(n) / n
    return radius * np.stack([np.cos(t), np.sin(t)], axis=1)  # [n, 2]


def _star() -> np.ndarray:
    radii = np.where(np.arange(10) % 2 == 0, 1.0, 0.42)
    return _regular(10) * radii[:, None]


def _heart() -> np.ndarray:
    t = np.linspace(0, 2 * math.pi, 72, endpoint=False)
    x = 16 * np.sin(t) ** 3
    y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))  # image y points down
    return np.stack([x, y], axis=1)


def _semicircle() -> np.ndarray:
    t = np.linspace(math.pi, 2 * math.pi, 33)
    return np.stack([np.cos(t), np.sin(t)], axis=1)


def _cross(arm: float = 0.3) -> np.ndarray:
    a = arm
    return np.array(
        [(-a, -1), (a, -1), (a, -a), (1, -a), (1, a), (a, a), (a, 1), (-a, 1), (-a, a), (-1, a), (-1, -a), (-a, -a)]
    )


def _arrow() -> np.ndarray:
    return np.array([(-1, -0.2), (0.15, -0.2), (0.15, -0.55), (1, 0), (0.15, 0.55), (0.15, 0.2), (-1, 0.2)])


def _normalised(polygons: list[Polygon]) -> list[Polygon]:
    """Centre on the middle of the added area's extent and scale it to the unit circle."""
    added = np.concatenate([p for p, adds in polygons if adds])
    centre = (added.min(0) + added.max(0)) / 2
    scale = np.linalg.norm(added - centre, axis=1).max()
    return [((p - centre) / scale, adds) for p, adds in polygons]


_ELLIPSE = _regular(64) * np.array([1.0, 0.5])
SHAPES: dict[str, list[Polygon]] = {
    name: _normalised(polygons)
    for name, polygons in {
        "circle": [(_regular(64), True)],
        "square": [(_regular(4, phase=math.pi / 4), True)],
        "triangle": [(_regular(3), True)],
        "star": [(_star(), True)],
        "heart": [(_heart(), True)],
        "hexagon": [(_regular(6), True)],
        "crescent": [(_regular(64), True), (_regular(64, 0.82) + np.array([0.42, -0.12]), False)],
        "cross": [(_cross(), True)],
        "arrow": [(_arrow(), True)],
        "ring": [(_regular(64), True), (_regular(64, 0.5), False)],
        "pentagon": [(_regular(5), True)],
        "diamond": [(np.array([(0, -1), (0.66, 0), (0, 1), (-0.66, 0)]), True)],
        "ellipse": [(_ELLIPSE, True)],
        "trapezoid": [(np.array([(-1, 0.6), (1, 0.6), (0.45, -0.6), (-0.45, -0.6)]), True)],
        "octagon": [(_regular(8, phase=math.pi / 8), True)],
        "semicircle": [(_semicircle(), True)],
    }.items()
}


def stroke_width(radius: float) -> float:
    """Outline width in pixels: thin enough that an outlined circle is not a ring, never below 1.5 px."""
    return max(1.5, 0.12 * radius)


def crop_origin(center_xy: tuple[float, float], radius: float) -> tuple[int, int]:
    """Top-left pixel of the square crop that holds a shape of this centre and radius."""
    return math.floor(center_xy[0] - radius) - 1, math.floor(center_xy[1] - radius) - 1


def shape_alpha(
    shape: str, style: str, center_xy: tuple[float, float], radius: float, angle_deg: float
) -> tuple[np.ndarray, int, int]:
    """Pixel coverage of one drawn shape, in a local crop.

    Args:
        shape, style: a key of SHAPES and one of STYLES.
        center_xy: centre in image pixels; radius: pixels; angle_deg: rotation, clockwise.
    Returns:
        alpha [n, n] float32 in [0, 1], and the crop's top-left pixel (x0, y0) in the image.
    """
    if shape not in SHAPES:
        raise ValueError(f"unknown shape '{shape}'; choose one of {sorted(SHAPES)}")
    if style not in STYLES:
        raise ValueError(f"unknown style '{style}'; choose one of {list(STYLES)}")
    x0, y0 = crop_origin(center_xy, radius)
    n = math.ceil(2 * radius) + 3
    s = SUPERSAMPLE
    local = np.array([center_xy[0] - x0, center_xy[1] - y0]) * s
    t = math.radians(angle_deg)
    rotation = np.array([[math.cos(t), math.sin(t)], [-math.sin(t), math.cos(t)]])  # row vectors @ R
    polygons = [(p @ rotation * radius * s + local, adds) for p, adds in SHAPES[shape]]

    filled = Image.new("1", (n * s, n * s), 0)
    draw = ImageDraw.Draw(filled)
    for points, adds in polygons:
        draw.polygon([tuple(q) for q in points], fill=1 if adds else 0)
    mask = np.asarray(filled, dtype=bool)
    if style != "solid":
        mask = mask & (_outline(polygons, n * s, stroke_width(radius) * s) | _pattern(style, n * s, radius * s, t))
    alpha = mask.reshape(n, s, n, s).mean(axis=(1, 3), dtype=np.float32)  # [n, n]
    return alpha, x0, y0


def _outline(polygons: list[Polygon], size: int, width: float) -> np.ndarray:
    """A band of `width` along every polygon edge; cut with the filled mask it lies inside the shape."""
    band = Image.new("1", (size, size), 0)
    draw = ImageDraw.Draw(band)
    for points, _ in polygons:
        ring = [tuple(q) for q in points] + [tuple(points[0])]
        joint = "curve" if len(points) < 20 else None  # many-sided polygons are round already
        draw.line(ring, fill=1, width=max(1, round(2 * width)), joint=joint)
    return np.asarray(band, dtype=bool)


def _pattern(style: str, size: int, radius: float, angle: float) -> np.ndarray:
    """Interior pattern in supersampled pixels: stripes or a dot grid turned with the shape."""
    if style == "outlined":
        return np.zeros((size, size), dtype=bool)
    xx, yy = np.arange(size, dtype=np.float32), np.arange(size, dtype=np.float32)[:, None]
    cos, sin = math.cos(angle + 0.6), math.sin(angle + 0.6)  # pattern turned a little off the shape's axes
    u = xx * cos + yy * sin  # [size, size]
    if style == "striped":
        period = max(4.0 * SUPERSAMPLE, 0.4 * radius)
        return (u % period) < period / 2
    spacing = max(4.0 * SUPERSAMPLE, 0.33 * radius)
    v = yy * cos - xx * sin  # [size, size]
    du, dv = (u % spacing) - spacing / 2, (v % spacing) - spacing / 2
    return du**2 + dv**2 < (0.3 * spacing) ** 2
