"""A `transformers` ALIGN vision tower (EfficientNet) as a dense backbone: its last map is already the joint space."""

from __future__ import annotations

import torch
from torch import nn

from ovdet.towers.backbone import DenseFeatures, VisionBackbone

MERGES = ("none", "pool")
STRIDE = 32  # the stem and four stride-2 stages of EfficientNet


class AlignVisionBackbone(VisionBackbone):
    """Every cell of ALIGN's last EfficientNet map is a region token.

    ALIGN has no visual projection: its image embedding is the global mean of the last map
    (`AlignVisionModel.pooler`, an average pool over the whole map), so each cell is already a
    vector of the shared image-text space (D = the last block's channels, 640 for ALIGN-base) and
    the map's mean is the image embedding. BatchNorm statistics stay frozen (the tower is always
    in eval mode): detection batches are too small to re-estimate them.

    Merge modes:
        "none" (default): the cells and a new, trainable LayerNorm (as the ResNet towers).
        "pool": each cell times the image embedding first (the OWL-ViT class-token merge, with the
            pooled output in the class token's place), so every region carries image-level context.

    Args:
        vision_model: `AlignModel.vision_model` (an `AlignVisionModel`).
        image_mean / image_std: pixel normalisation the tower was trained with (ALIGN: [-1, 1], i.e. 0.5 / 0.5).
        trainable_layers: 0 freezes the tower; N fine-tunes its last N EfficientNet blocks.
        merge: "none" or "pool", see above.
    """

    convolutional = True

    def __init__(
        self,
        vision_model: nn.Module,
        image_mean: tuple[float, float, float],
        image_std: tuple[float, float, float],
        trainable_layers: int = 0,
        merge: str = "none",
    ):
        super().__init__()
        if merge not in MERGES:
            raise ValueError(f"merge must be one of {MERGES}, got {merge!r}")
        self.vision = vision_model
        self.merge = merge
        self.width = int(vision_model.encoder.blocks[-1].projection.project_bn.num_features)
        self.stride = STRIDE
        self.default_image_size = max(STRIDE, (int(vision_model.config.image_size) // STRIDE) * STRIDE)
        self.image_mean = tuple(image_mean)
        self.image_std = tuple(image_std)
        self.merge_norm = nn.LayerNorm(self.width)
        self.set_trainable_layers(trainable_layers)

    def set_trainable_layers(self, n: int) -> None:
        """Freeze the tower except its last `n` EfficientNet blocks."""
        self._freeze_all_but_last(self.vision.encoder.blocks, nn.Identity(), n, "blocks")

    def train(self, mode: bool = True):
        super().train(mode)
        self.vision.eval()  # frozen BatchNorm statistics, whatever the parent does
        return self

    def feature_map(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """ALIGN's last map, in the joint space: [B, 3, S, S] -> [B, D, S/32, S/32]."""
        return self.vision.encoder(self.vision.embeddings(pixel_values)).last_hidden_state

    def encode(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Cells [B, h*w, D] and ALIGN's image embedding [B, D], their mean (`get_image_features`)."""
        tokens = self.feature_map(pixel_values).flatten(2).transpose(1, 2)  # [B, h*w, D]
        return tokens, tokens.mean(1)

    def cell_embeddings(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """[B, 3, S, S] -> [B, D, h, w]: the last map's cells, already in the joint space."""
        return self.feature_map(pixel_values)

    def encode_crops(self, crops: torch.Tensor) -> torch.Tensor:
        """ALIGN's image embedding of crops: [K, 3, c, c] -> [K, D]."""
        return self.encode(crops)[1]

    def region_tower(self, clip):
        """The distillation stage's view of this tower (`ovdet.distill.region_tower` dispatches here)."""
        from ovdet.distill.mean_pool_region_tower import MeanPoolRegionTower

        return MeanPoolRegionTower(self)

    def forward(self, pixel_values: torch.Tensor) -> DenseFeatures:
        """pixel_values: [B, 3, S, S] normalised, S a multiple of 32."""
        size = pixel_values.shape[-1]
        if pixel_values.shape[-2] != size or size % self.stride:
            raise ValueError(
                f"input must be square with a side divisible by the stride {self.stride}, got {tuple(pixel_values.shape[-2:])}"
            )
        tokens, pooled = self.encode(pixel_values)  # [B, h*w, D], [B, D]
        if self.merge == "pool":
            tokens = tokens * pooled[:, None, :]  # [B, h*w, D]
        return DenseFeatures(tokens=self.merge_norm(tokens), grid=self.grid_size(size))
