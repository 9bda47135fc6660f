"""EVA-CLIP seen as the distillation stage sees a tower: CLIPSelf's own setting (its F-ViT builds on EVA-CLIP)."""

from __future__ import annotations

import torch

from ovdet.distill.region_tower import RegionTower
from ovdet.towers.vision_eva import EvaVisionBackbone


class EvaRegionTower(RegionTower):
    """Every patch token through the trunk's final LayerNorm and EVA-CLIP's projection, then RoIAlign to 1x1
    (CLIPSelf's `encode_dense` + `roi_align`), as for the CLIP ViT; the class token makes the image embedding.

    Crops run at the tower's own resolution; the dense map at any size, rotary embeddings rebuilt by timm.
    """

    roi_size = 1

    def __init__(self, backbone: EvaVisionBackbone):
        super().__init__()
        self.backbone = backbone
        self.crop_size = backbone.default_image_size

    def dense_map(self, pixel_values: torch.Tensor) -> torch.Tensor:
        tokens = self.backbone.patch_tokens(pixel_values)[:, self.backbone.trunk.num_prefix_tokens :]  # [B, h*w, D]
        h, w = self.backbone.grid_size(pixel_values.shape[-1])
        joint = self.backbone.joint(tokens)  # [B, h*w, E]
        return joint.transpose(1, 2).reshape(joint.shape[0], -1, h, w)  # [B, E, h, w]

    def pool_regions(self, rois: torch.Tensor) -> torch.Tensor:
        return rois.flatten(1)  # [K, E, 1, 1] -> [K, E]

    def encode_crops(self, crops: torch.Tensor) -> torch.Tensor:
        return self.backbone.encode_crops(crops)  # [K, E]

    def cell_embeddings(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.dense_map(pixel_values)  # [B, E, h, w]

    def set_trainable_layers(self, n: int) -> None:
        """The last `n` Eva blocks and the final LayerNorm train; the projection stays (the text side's space)."""
        self.backbone.set_trainable_layers(n)
