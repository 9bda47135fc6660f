"""MobileCLIP's FastViT map seen as the distillation stage sees a tower: boxes pooled by its own average pool."""

from __future__ import annotations

import torch

from ovdet.distill.region_tower import RegionTower
from ovdet.towers.vision_fastvit import FastViTVisionBackbone


class FastViTRegionTower(RegionTower):
    """FastViT's last map, each cell projected into the joint space, RoI-aligned to the tower's own grid and
    averaged: MobileCLIP's average pool and projection, applied to a box.

    At the tower's training resolution a whole-input box samples every cell at its centre, so its region
    embedding is MobileCLIP's image embedding itself; a cell alone is its own embedding.
    """

    def __init__(self, backbone: FastViTVisionBackbone):
        super().__init__()
        self.backbone = backbone
        self.roi_size = backbone.default_image_size // backbone.stride
        self.crop_size = backbone.default_image_size

    def dense_map(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.backbone.cell_embeddings(pixel_values)  # [B, E, S/stride, S/stride]

    def pool_regions(self, rois: torch.Tensor) -> torch.Tensor:
        return rois.mean((2, 3))  # [K, E, r, r] -> [K, E]

    def encode_crops(self, crops: torch.Tensor) -> torch.Tensor:
        return self.backbone.encode_crops(crops)  # [K, E]

    def cell_embeddings(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.dense_map(pixel_values)  # [B, E, h, w]

    def set_trainable_layers(self, n: int) -> None:
        """The last `n` FastViT stages and the final conv train; BatchNorm statistics stay frozen."""
        self.backbone.set_trainable_layers(n)
