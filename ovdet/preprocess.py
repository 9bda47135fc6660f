"""Turn images into the square, normalised input batch the backbone wants."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

# OpenAI CLIP's pixel normalisation (most CLIP-family checkpoints use it).
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


class ImagePreprocessor:
    """Resize the longest side to `image_size`, pad bottom/right to a square, normalise.

    Padding is at the bottom/right, so a box normalised to the padded square maps back to
    pixels by one factor, `max(width, height)` (see `ovdet.boxes.normalized_to_pixels`).

    Args:
        image_size: side of the square input (a multiple of the backbone stride).
        image_mean / image_std: the CLIP tower's normalisation; padding is the mean colour (0 after normalising).
    """

    def __init__(self, image_size: int, image_mean, image_std):
        self.image_size = int(image_size)
        self.mean = torch.tensor(image_mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(image_std, dtype=torch.float32).view(3, 1, 1)

    def to_tensor(self, image: Image.Image) -> torch.Tensor:
        """One RGB PIL image -> [3, S, S] normalised and padded."""
        w, h = image.size
        scale = self.image_size / max(w, h)
        new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
        pixels = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.uint8).copy())  # [H, W, 3]
        x = pixels.permute(2, 0, 1).float().div(255.0)[None]  # [1, 3, H, W]
        x = F.interpolate(x, size=(new_h, new_w), mode="bilinear", antialias=True, align_corners=False)[0]
        x = (x - self.mean) / self.std  # [3, h, w]
        return F.pad(x, (0, self.image_size - new_w, 0, self.image_size - new_h), value=0.0)

    def __call__(self, images: list[Image.Image]) -> torch.Tensor:
        """List of RGB PIL images -> [B, 3, S, S]."""
        return torch.stack([self.to_tensor(im) for im in images])
