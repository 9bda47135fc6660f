"""ALIGN's EfficientNet map seen as the distillation stage sees a tower: boxes pooled by ALIGN's own mean."""

from __future__ import annotations

import torch

from ovdet.distill.region_tower import RegionTower
from ovdet.towers.vision_align import AlignVisionBackbone


class AlignRegionTower(RegionTower):
    """ALIGN's last map (already the joint space) RoI-aligned to the tower's own grid, then averaged: the
    global mean that makes ALIGN's image embedding, applied to a box.

    At the tower's training resolution a whole-input box samples every cell at its centre, so its region
    embedding is ALIGN's image embedding itself; a cell alone is its own embedding.
    """

    def __init__(self, backbone: AlignVisionBackbone):
        super().__init__()
        self.backbone = backbone
        self.roi_size = backbone.default_image_size // backbone.stride
        self.crop_size = backbone.default_image_size

    def dense_map(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.backbone.feature_map(pixel_values)  # [B, D, S/32, S/32]

    def pool_regions(self, rois: torch.Tensor) -> torch.Tensor:
        return rois.mean((2, 3))  # [K, D, r, r] -> [K, D]

    def encode_crops(self, crops: torch.Tensor) -> torch.Tensor:
        return self.backbone.encode(crops)[1]  # [K, D], ALIGN's image embedding

    def cell_embeddings(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.dense_map(pixel_values)  # [B, D, h, w]

    def set_trainable_layers(self, n: int) -> None:
        """The last `n` EfficientNet blocks train; BatchNorm statistics stay frozen."""
        self.backbone.set_trainable_layers(n)
