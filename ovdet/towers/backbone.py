"""The one interface every vision tower implements: image batch in, dense features out."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class DenseFeatures:
    """Per-cell features of a vision tower; every cell is a candidate region (OWL-ViT)."""

    tokens: torch.Tensor  # [B, h*w, D], row-major over the grid
    grid: tuple[int, int]  # (h, w)
    # [B, C, h', w'] the map a tower's own region pooling reads boxes from (ResNet: layer3), or None
    region_map: torch.Tensor | None = None


class VisionBackbone(nn.Module):
    """Base class for CLIP vision towers (ViT from transformers, ResNet from open_clip, ...).

    Subclasses set `width` (D), `stride` (input pixels per grid cell), `default_image_size`
    (the resolution the tower was trained at), `image_mean` and
    `image_std` (the tower's normalisation), and implement `forward`.
    """

    width: int
    stride: int
    # a convolutional tower (ResNet, EfficientNet, FastViT): "auto" precision keeps it in fp32 on CPUs, where
    # bf16 convolutions gain little or lose (ovdet.models.precision.resolve_precision)
    convolutional: bool = False
    default_image_size: int
    image_mean: tuple[float, float, float]
    image_std: tuple[float, float, float]

    def forward(self, pixel_values: torch.Tensor) -> DenseFeatures:  # pragma: no cover - interface
        raise NotImplementedError

    def _freeze_all_but_last(self, blocks, final: nn.Module, n: int, unit: str) -> None:
        """Freeze `self.vision` except its last `n` of `blocks` (and `final` when n > 0)."""
        if not 0 <= n <= len(blocks):
            raise ValueError(f"trainable_layers={n} but the tower has {len(blocks)} {unit}; use 0..{len(blocks)}")
        self.trainable_layers = n
        self.vision.requires_grad_(False)
        if n > 0:
            for block in blocks[len(blocks) - n :]:
                block.requires_grad_(True)
            final.requires_grad_(True)

    def grid_size(self, image_size: int) -> tuple[int, int]:
        """Grid (h, w) produced for a square input of `image_size` pixels."""
        return image_size // self.stride, image_size // self.stride
