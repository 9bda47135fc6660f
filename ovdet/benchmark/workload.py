"""What the benchmark feeds the models: photos of mixed sizes and vocabularies of realistic names."""

from __future__ import annotations

import numpy as np
from PIL import Image

# COCO-like photo sizes (landscape and portrait), cycled through a batch: batches mix sizes.
IMAGE_SIZES = ((640, 480), (480, 640), (640, 427), (500, 375))
_ADJECTIVES = (
    "red", "blue", "green", "yellow", "black", "white", "wooden", "metal", "plastic", "glass", "small", "large",
    "old", "striped", "folding", "electric", "paper", "leather", "round", "tall", "toy", "baby", "dried", "frozen",
    "broken", "open", "wet", "silver", "golden", "pink",
)  # fmt: skip
_NOUNS = (
    "cup", "chair", "umbrella", "bottle", "dog", "cat", "bicycle", "lamp", "book", "clock", "shoe", "hat", "bag",
    "box", "bowl", "knife", "fork", "spoon", "table", "bench", "kite", "ball", "bear", "horse", "boat", "truck",
    "car", "bus", "train", "plane", "phone", "laptop", "pillow", "towel", "basket", "bucket", "candle", "mirror",
    "vase", "teapot", "scarf",
)  # fmt: skip


def synthetic_images(batch: int, seed: int = 0) -> list[Image.Image]:
    """`batch` random-noise RGB images, sizes cycling through IMAGE_SIZES (speed does not depend on content)."""
    rng = np.random.default_rng(seed)
    return [
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        for w, h in (IMAGE_SIZES[i % len(IMAGE_SIZES)] for i in range(batch))
    ]


def synthetic_names(count: int) -> list[str]:
    """`count` distinct one- and two-word names, LVIS-like in length (30 x 41 + 41 = 1271 at most)."""
    names = list(_NOUNS) + [f"{a} {n}" for a in _ADJECTIVES for n in _NOUNS]
    if count > len(names):
        raise ValueError(f"at most {len(names)} synthetic query names, asked for {count}")
    return names[:count]
