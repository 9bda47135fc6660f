"""Crop re-scoring's answer from ONE pass: each candidate box pooled from the tower's own region map.

`CropRescorer` cuts the top boxes out of the input and runs the whole CLIP tower on each crop (33 tower
passes per image for 32 boxes). This scorer reads the same context squares from the region map of the pass
that found the boxes and runs only the tower's region pooling on them (a CLIP ResNet: its last stage and
attention pool on each box's RoI-aligned layer3 features, `pool_region_features`). After the dense
distillation stage (`ovdet train experiment=dense_distill`) those pooled embeddings match the crops'.
The scores, base and novel weights and reference names are the crop re-scorer's.
"""

from __future__ import annotations

import torch
from torchvision.ops import roi_align

from ovdet.models.crop_rescorer import CropRescorer


class RegionPoolScorer(CropRescorer):
    """`CropRescorer` with `region_embeddings` pooled from the pass's region map instead of re-encoded crops.

    Args: as `CropRescorer` (topk, weight, context, logit_scale, reference, novel_weight).
    """

    def region_embeddings(self, backbone, pixel_values: torch.Tensor, boxes: torch.Tensor,
                          region_map: torch.Tensor | None = None) -> torch.Tensor:
        """[B, K, E] L2-normalised embeddings of boxes [B, K, 4] cxcywh 0..1, pooled from `region_map`
        [B, C, h, w] (computed from `pixel_values` when None: image exemplars)."""
        if region_map is None:
            region_map = backbone(pixel_values).region_map  # [B, C, h, w]
        b, k, _ = boxes.shape
        side = pixel_values.shape[-1]
        rois = self.context_rois(boxes, side).to(region_map.device)  # [B*K, 5] input pixels
        size = backbone.region_roi_size
        pooled = roi_align(region_map.float(), rois, output_size=(size, size), spatial_scale=region_map.shape[-1] / side,
                           sampling_ratio=-1, aligned=True)  # [B*K, C, r, r]
        return torch.nn.functional.normalize(backbone.pool_region_features(pooled).float(), dim=-1).view(b, k, -1)
