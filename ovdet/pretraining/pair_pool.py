"""A pre-rendered pool of ShapeWorld image-text pairs: scenes with captions, object crops with phrases.

Rendering costs ~25 ms a scene, far more than a training step spends per image, so the pool is
rendered once (in worker processes), kept as uint8 pixels at the CLIP's input size, and cached on
disk by its settings. Each item keeps several texts; training draws one of them each time.
"""

from __future__ import annotations

import hashlib
import json
import pickle
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from rich.progress import track

from ovdet.data.shapeworld import SceneConfig, render_scene
from ovdet.data.shapeworld_captions import object_phrase, scene_captions
from ovdet.data.shapeworld_dataset import object_crops

PAD_RGB = (123, 117, 104)  # OpenAI CLIP's mean colour: 0 after normalising, like the detector's padding


@dataclass(frozen=True)
class PoolSpec:
    """What to render: scenes `(seed, 0..num_scenes-1)`, each giving its own picture and object crops.

    Args:
        num_scenes: scenes to render.
        seed: generator seed; a held-out evaluation pool uses a seed never used for training.
        image_size: S, side of every stored image (the CLIP's input size).
        scenes: keep the whole scene (padded square) with its captions.
        captions_per_scene: captions drawn per scene.
        crops_per_scene: single-object crops per scene (None: every object).
        phrases_per_crop: phrases drawn per crop (attributes and templates vary).
        context: (min, max) margin around the object box, as a fraction of its side, drawn per scene.
        max_objects: objects per scene at most (fewer objects: larger, clearer scenes at small S).
    """

    num_scenes: int
    seed: int
    image_size: int = 64
    scenes: bool = True
    captions_per_scene: int = 5
    crops_per_scene: int | None = None
    phrases_per_crop: int = 4
    context: tuple[float, float] = (0.1, 0.4)
    max_objects: int = 8

    def __post_init__(self):
        if self.num_scenes < 1 or self.image_size < 8 or self.seed < 0:
            raise ValueError(f"need num_scenes >= 1, image_size >= 8, seed >= 0; got {self}")
        if not 0.0 <= self.context[0] <= self.context[1]:
            raise ValueError(f"context must be (min, max) with 0 <= min <= max, got {self.context}")


@dataclass
class PairPool:
    """Items of the pool: pixels, candidate texts, and for crops the object's attributes."""

    images: np.ndarray  # [N, S, S, 3] uint8
    texts: list[tuple[str, ...]]  # per item, the texts it may be paired with
    attributes: list[dict | None]  # per item: {"shape", "color", "style", "size"} for crops, None for scenes

    def __len__(self) -> int:
        return len(self.texts)

    def crop_indices(self) -> np.ndarray:
        return np.array([i for i, a in enumerate(self.attributes) if a is not None], dtype=np.int64)


def square_image(image: Image.Image, size: int) -> np.ndarray:
    """Pad bottom/right to a square (as the detector does) and resize: [size, size, 3] uint8."""
    side = max(image.size)
    canvas = Image.new("RGB", (side, side), PAD_RGB)
    canvas.paste(image, (0, 0))
    return np.asarray(canvas.resize((size, size), Image.BICUBIC))


def _render_scene_items(job: tuple[PoolSpec, int]) -> list[tuple[np.ndarray, tuple[str, ...], dict | None]]:
    spec, index = job
    config = SceneConfig(max_objects=spec.max_objects, min_objects=1)
    image, scene = render_scene((spec.seed, index), config)
    rng = np.random.default_rng((spec.seed, index, 7))
    items = []
    if spec.scenes:
        items.append((square_image(image, spec.image_size), tuple(scene_captions(scene, rng, spec.captions_per_scene)), None))
    context = float(rng.uniform(*spec.context))
    for crop in object_crops(image, scene, rng, spec.crops_per_scene, context=context):
        phrases = tuple(dict.fromkeys(object_phrase(crop, rng) for _ in range(spec.phrases_per_crop)))
        attrs = {"shape": crop.shape, "color": crop.color, "style": crop.style, "size": crop.size}
        pixels = np.asarray(crop.image.convert("RGB").resize((spec.image_size, spec.image_size), Image.BICUBIC))
        items.append((pixels, phrases, attrs))
    return items


def render_pool(spec: PoolSpec, workers: int = 0, progress: bool = True) -> PairPool:
    """Render every scene of `spec` (in `workers` processes; 0 = this one)."""
    jobs = [(spec, i) for i in range(spec.num_scenes)]
    if workers:
        with ProcessPoolExecutor(workers) as pool:
            per_scene = list(_track(pool.map(_render_scene_items, jobs, chunksize=32), len(jobs), progress))
    else:
        per_scene = list(_track(map(_render_scene_items, jobs), len(jobs), progress))
    items = [item for scene_items in per_scene for item in scene_items]
    return PairPool(
        images=np.stack([it[0] for it in items]),
        texts=[it[1] for it in items],
        attributes=[it[2] for it in items],
    )


def cached_pool(spec: PoolSpec, cache_dir: str | Path | None, workers: int = 0, progress: bool = True) -> PairPool:
    """`render_pool`, or its copy cached under `cache_dir` from a run with the same spec."""
    if cache_dir is None:
        return render_pool(spec, workers, progress)
    key = hashlib.sha1(json.dumps(asdict(spec), sort_keys=True).encode()).hexdigest()[:12]
    path = Path(cache_dir) / f"shapeworld_pairs_{key}.pkl"
    if path.is_file():
        with path.open("rb") as f:
            return pickle.load(f)
    pool = render_pool(spec, workers, progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with tmp.open("wb") as f:
        pickle.dump(pool, f, protocol=pickle.HIGHEST_PROTOCOL)
    tmp.rename(path)
    return pool


def _track(results, total: int, enabled: bool):
    return track(results, total=total, description="rendering pairs", disable=not enabled, transient=True)
