"""A generated clip of ShapeWorld shapes moving on known paths, with every frame's true boxes and identities.

Each object has its own horizontal lane (so objects never hide one another and identity is never ambiguous),
bounces between the lane's ends at a constant speed, bobs up and down inside the lane and spins. Its box in
a frame is tight around the pixels it covers at least half of, as ShapeWorld's boxes are.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ovdet.data.shapeworld import COLORS
from ovdet.data.shapeworld_shapes import SHAPES, shape_alpha
from ovdet.errors import OvdetError
from ovdet.file_mark import marked
from ovdet.safe_write import atomic_write_text

DEFAULT_SHAPES = ("circle", "square", "triangle", "hexagon")  # base shapes the embedded model tells apart
DRAWN = 0.5  # a pixel is in an object's box when the object covers at least half of it
LANE_COLORS = ("red", "blue", "yellow", "green", "orange", "purple", "cyan", "pink")


@dataclass(frozen=True)
class MovingObject:
    """One object and its path: x bounces between the lane's ends, y bobs around the lane's middle."""

    identity: int
    shape: str
    color: str
    radius: float  # px
    lane: tuple[float, float]  # (top, bottom) px of its horizontal band
    x0: float  # px, centre at frame 0
    speed: float  # px per frame along x (the sign is the direction)
    bob: float  # px amplitude of the vertical bobbing
    phase: float  # radians, of the bobbing
    spin: float  # degrees per frame

    def centre(self, frame: int, width: int) -> tuple[float, float]:
        """The centre at `frame` (reflected at the lane's ends, so the path is continuous)."""
        low, high = self.radius + 2, width - self.radius - 2
        span = high - low
        u = (self.x0 - low + self.speed * frame) % (2 * span)  # position along an unfolded path
        x = low + (u if u <= span else 2 * span - u)
        y = (self.lane[0] + self.lane[1]) / 2 + self.bob * math.sin(self.phase + 0.15 * frame)
        return x, y


@dataclass(frozen=True)
class FrameTruth:
    """What a frame holds: per object, its identity, shape and box (xyxy pixel edges)."""

    index: int
    identities: list[int]
    shapes: list[str]
    boxes_xyxy: list[tuple[int, int, int, int]]

    def to_dict(self) -> dict:
        return {"frame": self.index, "objects": [{"id": i, "shape": s, "box": list(b)}
                                                 for i, s, b in zip(self.identities, self.shapes, self.boxes_xyxy)]}


def plan_objects(width: int, height: int, count: int = 4, shapes: tuple[str, ...] = DEFAULT_SHAPES,
                 seed: int = 0) -> list[MovingObject]:
    """`count` objects, one lane each, shapes taken in turn from `shapes`; a function of the seed."""
    if width < 64 or height < 64 or width % 2 or height % 2:
        raise OvdetError(f"clip size {width}x{height} must be even and at least 64x64 (video encoders need even sizes)")
    if not 1 <= count <= len(LANE_COLORS):
        raise OvdetError(f"objects={count} must be between 1 and {len(LANE_COLORS)}")
    unknown = sorted(set(shapes) - set(SHAPES))
    if unknown or not shapes:
        raise OvdetError(f"unknown or no shapes {unknown}; choose from {sorted(SHAPES)}")
    lane_height = height / count
    radius = min(0.42 * lane_height, 0.11 * min(width, height))
    if radius < 10:
        raise OvdetError(f"{count} objects in a {height} px tall clip are {2 * radius:.0f} px tall; "
                         "ShapeWorld shapes need 20 px: use fewer objects or a taller clip")
    rng = np.random.default_rng(seed)
    objects = []
    for i in range(count):
        top = i * lane_height
        speed = float(rng.uniform(0.012, 0.03) * width * rng.choice([-1, 1]))
        objects.append(MovingObject(
            identity=i, shape=shapes[i % len(shapes)], color=LANE_COLORS[i], radius=radius,
            lane=(top, top + lane_height), x0=float(rng.uniform(radius + 2, width - radius - 2)), speed=speed,
            bob=max(0.0, lane_height / 2 - radius - 2), phase=float(rng.uniform(0, math.tau)),
            spin=0.0 if shapes[i % len(shapes)] == "square" else float(rng.uniform(-4, 4)),
        ))  # fmt: skip
    return objects


def background(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A muted diagonal gradient with mild noise, the same for every frame: [H, W, 3] float32."""
    rng = np.random.default_rng(seed + 1)
    start, stop = rng.uniform(90, 150, 3), rng.uniform(90, 150, 3)
    ramp = (np.arange(width)[None, :] / width + np.arange(height)[:, None] / height) / 2  # [H, W] in 0..1
    pixels = start + (stop - start) * ramp[..., None]  # [H, W, 3]
    return (pixels + rng.normal(0.0, 2.0, pixels.shape)).astype(np.float32)


def render_frame(objects: list[MovingObject], frame: int, canvas: np.ndarray) -> tuple[np.ndarray, FrameTruth]:
    """Draw `objects` at `frame` over a copy of `canvas` [H, W, 3]; returns uint8 RGB [H, W, 3] and the truth."""
    pixels = canvas.copy()
    height, width = pixels.shape[:2]
    boxes = []
    for obj in objects:
        centre = obj.centre(frame, width)
        alpha, x0, y0 = shape_alpha(obj.shape, "solid", centre, obj.radius, obj.spin * frame)  # [n, n]
        n = alpha.shape[0]
        alpha = alpha[max(0, -y0): height - y0, max(0, -x0): width - x0]  # crop to the frame
        x0, y0 = max(0, x0), max(0, y0)
        region = pixels[y0: y0 + alpha.shape[0], x0: x0 + alpha.shape[1]]  # [h, w, 3]
        region += (np.array(COLORS[obj.color], np.float32) - region) * alpha[..., None]
        rows, cols = np.flatnonzero((alpha >= DRAWN).any(axis=1)), np.flatnonzero((alpha >= DRAWN).any(axis=0))
        assert rows.size and cols.size and n, "every object stays inside the frame"
        boxes.append((x0 + int(cols[0]), y0 + int(rows[0]), x0 + int(cols[-1]) + 1, y0 + int(rows[-1]) + 1))
    truth = FrameTruth(frame, [o.identity for o in objects], [o.shape for o in objects], boxes)
    return np.clip(pixels + 0.5, 0, 255).astype(np.uint8), truth


def render_clip(frames: int, width: int, height: int, count: int = 4, shapes: tuple[str, ...] = DEFAULT_SHAPES,
                seed: int = 0):
    """Yield (RGB uint8 [H, W, 3], FrameTruth) for frames 0..frames-1."""
    if frames < 1:
        raise OvdetError(f"frames={frames} must be at least 1")
    objects = plan_objects(width, height, count, shapes, seed)
    canvas = background(width, height, seed)
    for t in range(frames):
        yield render_frame(objects, t, canvas)


def truth_path(clip: str | Path) -> Path:
    """Where a clip's ground truth goes: `clip.mp4` -> `clip.truth.json`."""
    clip = Path(clip)
    return clip.with_name(f"{clip.stem}.truth.json")


def write_moving_shapes(clip: str | Path, frames: int = 90, width: int = 320, height: int = 240, count: int = 4,
                        shapes: tuple[str, ...] = DEFAULT_SHAPES, seed: int = 0, fps: float = 15.0,
                        overwrite: bool = False) -> Path:
    """Encode the clip to `clip` (.mp4, .mkv or .mov) and its truth to `clip.truth.json`; returns the latter.

    The truth is a marked JSON object {"fps", "width", "height", "frames": [FrameTruth.to_dict(), ...]}. An
    existing file ovdet did not write is refused in one line before any frame is drawn (unless `overwrite`).
    """
    from ovdet.safe_write import check_output_path
    from ovdet.video.video_writer import VideoWriter, check_video_output

    truth_file = truth_path(clip)
    check_video_output(clip, "clip", overwrite=overwrite)
    check_output_path(truth_file, "truth", overwrite=overwrite)
    plan_objects(width, height, count, shapes, seed)  # bad sizes or shapes: refused before the writer opens
    truths = []
    with VideoWriter(clip, fps, crf=18) as writer:
        for pixels, truth in render_clip(frames, width, height, count, shapes, seed):
            writer.write(pixels)
            truths.append(truth.to_dict())
    record = {"clip": Path(clip).name, "fps": fps, "width": width, "height": height, "seed": seed, "frames": truths}
    atomic_write_text(truth_file, json.dumps(marked(record), indent=1))
    return truth_file
