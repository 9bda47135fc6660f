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
import torch.nn.functional as F

from ovdet.box_ops import roi_align
from ovdet.models.crop_rescorer import CropRescorer


class RegionPoolScorer(CropRescorer):
    """`CropRescorer` with `region_embeddings` pooled from the pass's region map instead of re-encoded crops.

    Args: as `CropRescorer` (topk, weight, context, logit_scale, reference, novel_weight), and
        classifier: a trained `RegionClassifier` of the pooled regions (F-VLM's detector score), or None.
        classifier_weight: its share of the naming probability for reference (base) names: p = p_clip^(1 - s) *
            p_classifier^s, where p_clip is the pooled embedding's softmax (0: CLIP alone).
        novel_classifier_weight: the same share for every other query (0, CLIP alone, unless measured better).
        classifier_hidden: the classifier's hidden width (read by the detector that builds it).
    """

    def __init__(self, *args, classifier=None, classifier_weight: float = 0.0, novel_classifier_weight: float = 0.0,
                 classifier_hidden: int | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        if not 0.0 <= classifier_weight <= 1.0 or not 0.0 <= novel_classifier_weight <= 1.0:
            raise ValueError(f"need 0 <= classifier_weight, novel_classifier_weight <= 1; got {classifier_weight}, "
                             f"{novel_classifier_weight}")
        self.classifier = classifier
        self.classifier_weight, self.novel_classifier_weight = classifier_weight, novel_classifier_weight

    def pooled_rois(self, backbone, pixel_values: torch.Tensor, boxes: torch.Tensor,
                    region_map: torch.Tensor | None) -> torch.Tensor:
        """[B*K, C3, r, r]: the context squares of boxes [B, K, 4] cxcywh 0..1 RoI-aligned on `region_map` [B, C3,
        h, w] (computed from `pixel_values` when None: image exemplars)."""
        if region_map is None:
            region_map = backbone(pixel_values).region_map  # [B, C, h, w]
        side = pixel_values.shape[-1]
        rois = self.context_rois(boxes, side).to(region_map.device)  # [B*K, 5] input pixels
        size = backbone.region_roi_size
        return roi_align(region_map.float(), rois, output_size=(size, size), spatial_scale=region_map.shape[-1] / side,
                         sampling_ratio=-1, aligned=True)  # [B*K, C, r, r]

    def region_embeddings(self, backbone, pixel_values: torch.Tensor, boxes: torch.Tensor,
                          region_map: torch.Tensor | None = None) -> torch.Tensor:
        """[B, K, E] L2-normalised embeddings of boxes [B, K, 4] cxcywh 0..1, pooled from `region_map`
        [B, C, h, w] (computed from `pixel_values` when None: image exemplars)."""
        b, k, _ = boxes.shape
        pooled = self.pooled_rois(backbone, pixel_values, boxes, region_map)
        return F.normalize(backbone.pool_region_features(pooled).float(), dim=-1).view(b, k, -1)

    def region_outputs(self, backbone, pixel_values: torch.Tensor, boxes: torch.Tensor,
                       region_map: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Both namings from one last-stage run per box: CLIP's attention pool and, when there is one, the
        trained classifier ([B*K, E] each, normalised)."""
        if self.classifier is None or self.classifier_weight + self.novel_classifier_weight == 0:
            return super().region_outputs(backbone, pixel_values, boxes, region_map)
        maps = backbone.region_stage(self.pooled_rois(backbone, pixel_values, boxes, region_map))  # [B*K, C, r/2, r/2]
        embeds = F.normalize(backbone.global_embedding(maps).float(), dim=-1)  # [B*K, E]
        return embeds, F.normalize(self.classifier(maps), dim=-1)
