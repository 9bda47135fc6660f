"""Images -> the square, normalised batch a tower wants, and boxes back to the image's pixels.

One object owns the geometry both ways (as torchvision's GeneralizedRCNNTransform does), so the
inverse can never drift from the forward transform.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

# OpenAI CLIP's pixel normalisation (most CLIP-family checkpoints use it).
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
MODES = ("pad", "stretch", "pad_gaussian")


class ImagePreprocessor:
    """Resize and pad (or stretch) to `image_size`, normalise; map boxes back.

    Modes, chosen by the checkpoint (config `preprocess`):
    - "pad" (ovdet): longest side to `image_size` (bilinear, anti-aliased, uint8), pad bottom/right with
      the mean colour (0 after normalising). One factor, `max(width, height)`, maps boxes back.
    - "stretch" (OWL-ViT's image processor): bicubic resize of the uint8 image to the square,
      aspect ratio not kept; boxes scale back per axis.
    - "pad_gaussian" (OWLv2's): scale to 0..1, pad bottom/right with 0 (black) to a square, blur
      with sigma (factor - 1) / 2 as skimage's anti-aliasing does, bilinear resize; boxes as "pad".

    Args:
        image_size: side of the square input (a multiple of the backbone stride).
        image_mean / image_std: the tower's normalisation.
        mode: one of MODES.
    """

    def __init__(self, image_size: int, image_mean=OPENAI_MEAN, image_std=OPENAI_STD, mode: str = "pad"):
        if mode not in MODES:
            raise ValueError(f"preprocess mode must be one of {MODES}, got {mode!r}")
        self.image_size = int(image_size)
        self.mode = mode
        self.mean = torch.tensor(image_mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(image_std, dtype=torch.float32).view(3, 1, 1)

    def to_tensor(self, image: Image.Image) -> torch.Tensor:
        """One RGB PIL image -> [3, S, S] normalised."""
        rgb = image if image.mode == "RGB" else image.convert("RGB")
        pixels = torch.from_numpy(np.array(rgb, dtype=np.uint8)).permute(2, 0, 1)  # [3, H, W], one writable copy
        if self.mode == "stretch":
            return self._stretch(pixels)
        if self.mode == "pad_gaussian":
            return self._pad_gaussian(pixels)
        return self._pad(pixels)

    def to_model(self, images: list[Image.Image]) -> torch.Tensor:
        """List of RGB PIL images -> [B, 3, S, S]."""
        return torch.stack([self.to_tensor(im) for im in images])

    __call__ = to_model

    def to_original(self, boxes_xyxy: torch.Tensor, size: tuple[int, int], clip: bool = True) -> torch.Tensor:
        """[K, 4] xyxy in 0..1 of the model input -> [K, 4] xyxy in the image's pixels (`size` = width, height),
        clipped to the image unless `clip` is False (transformers' post-processing does not clip)."""
        width, height = size
        boxes = boxes_xyxy * self._scale(width, height).to(boxes_xyxy)  # [K, 4]
        if clip:
            boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width)
            boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height)
        return boxes

    def to_normalized(self, boxes_xyxy: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Inverse of `to_original` (no clipping): image pixels -> 0..1 of the model input."""
        return boxes_xyxy / self._scale(*size).to(boxes_xyxy)

    def _scale(self, width: int, height: int) -> torch.Tensor:
        if self.mode == "stretch":
            return torch.tensor([width, height, width, height], dtype=torch.float32)
        side = float(max(width, height))
        return torch.tensor([side] * 4)

    def _pad(self, pixels: torch.Tensor) -> torch.Tensor:
        _, h, w = pixels.shape
        scale = self.image_size / max(w, h)
        new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
        x = pixels[None]  # [1, 3, H, W] uint8
        if (new_h, new_w) != (h, w):
            # resized as uint8, as training's albumentations pipeline resizes: torch's uint8 kernel ran 8 photos
            # 640x480 -> 256 in 3.0 ms against 9.3 ms in float32 (an AMX Xeon); values within one grey level
            x = F.interpolate(x, size=(new_h, new_w), mode="bilinear", antialias=True, align_corners=False)
        x = (x[0].float() - self.mean * 255) / (self.std * 255)  # [3, h, w]
        return F.pad(x, (0, self.image_size - new_w, 0, self.image_size - new_h), value=0.0)

    def _stretch(self, pixels: torch.Tensor) -> torch.Tensor:
        import torchvision.transforms.v2.functional as tvF  # here, not at the top: `import torchvision` costs 1-2 s

        size = [self.image_size, self.image_size]
        x = tvF.resize(pixels, size, interpolation=tvF.InterpolationMode.BICUBIC, antialias=True)  # uint8 [3, S, S]
        return tvF.normalize(x.float(), (self.mean * 255).flatten().tolist(), (self.std * 255).flatten().tolist())

    def _pad_gaussian(self, pixels: torch.Tensor) -> torch.Tensor:
        import torchvision.transforms.v2.functional as tvF

        _, h, w = pixels.shape
        side = max(h, w)
        x = F.pad(pixels.float() * (1 / 255), (0, side - w, 0, side - h), value=0.0)  # [3, side, side]
        # float32 arithmetic as transformers' Owlv2ImageProcessor does it, so kernel and sigma agree bit for bit
        sigma = ((torch.tensor(float(side)) / torch.tensor(float(self.image_size)) - 1) / 2).clamp(min=0)
        if sigma > 0:
            kernel = int(2 * torch.ceil(3 * sigma).int() + 1)
            x = tvF.gaussian_blur(x[None], [kernel, kernel], sigma=[float(sigma)] * 2)[0]
        x = tvF.resize(x, [self.image_size, self.image_size], interpolation=tvF.InterpolationMode.BILINEAR, antialias=False)
        return tvF.normalize(x, self.mean.flatten().tolist(), self.std.flatten().tolist())
