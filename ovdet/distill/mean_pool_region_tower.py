"""A convolutional tower whose map cells already live in the joint image-text space and whose image embedding is
their mean (ALIGN's EfficientNet map; MobileCLIP's FastViT map, projected per cell), seen as the distillation stage
sees a tower: a box's embedding is the mean of its cells, RoI-aligned to the tower's own grid.

At the tower's training resolution a whole-input box samples every cell at its centre, so its region embedding is
the tower's image embedding itself; a cell alone is its own embedding.
"""

from __future__ import annotations

import torch

from ovdet.distill.region_tower import RegionTower


class MeanPoolRegionTower(RegionTower):
    """`backbone` brings `cell_embeddings` ([B, 3, S, S] -> [B, E, h, w]), `encode_crops` and
    `set_trainable_layers` (its BatchNorm statistics stay frozen there)."""

    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone
        self.roi_size = backbone.default_image_size // backbone.stride
        self.crop_size = backbone.default_image_size

    def dense_map(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.backbone.cell_embeddings(pixel_values)  # [B, E, S/stride, S/stride]

    def pool_regions(self, rois: torch.Tensor) -> torch.Tensor:
        return rois.mean((2, 3))  # [K, E, r, r] -> [K, E]

    def encode_crops(self, crops: torch.Tensor) -> torch.Tensor:
        return self.backbone.encode_crops(crops)  # [K, E], the tower's own image embedding

    def cell_embeddings(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.dense_map(pixel_values)  # [B, E, h, w]

    def set_trainable_layers(self, n: int) -> None:
        self.backbone.set_trainable_layers(n)
