"""MobileCLIP's vision tower (open_clip `TimmModel` around a timm `fastvit_mci*` FastViT) as a dense backbone."""

from __future__ import annotations

import torch
from torch import nn

from ovdet.towers.backbone import DenseFeatures, VisionBackbone


class FastViTVisionBackbone(VisionBackbone):
    """Every cell of FastViT's last map (after its `final_conv`) projected into the joint space is a region token.

    MobileCLIP's image embedding is the average of that map, then a linear projection (`trunk.head.fc`, plus
    open_clip's own linear head when it has one): projecting each cell first and averaging gives the same
    embedding, so the cells are the pooled embedding's parts (as MaskCLIP's cells are a ResNet's). A new,
    trainable LayerNorm follows. The grid stride is 32 for MCi0-2 (four stages), 64 for MCi3/MCi4 (five).
    BatchNorm statistics stay frozen (the tower is always in eval mode).

    Args:
        visual: open_clip `TimmModel` (`model.visual`) whose `trunk` is a timm `FastVit` with average pooling.
        image_mean / image_std: pixel normalisation the tower was trained with.
        trainable_layers: 0 freezes the tower; N fine-tunes the last N stages and the final conv.
    """

    convolutional = True

    def __init__(
        self,
        visual: nn.Module,
        image_mean: tuple[float, float, float],
        image_std: tuple[float, float, float],
        trainable_layers: int = 0,
    ):
        super().__init__()
        self.vision = visual
        trunk = visual.trunk
        proj = getattr(visual.head, "proj", None)
        self.width = int(proj.out_features if proj is not None else trunk.head.fc.out_features)
        self.stride = int(trunk.feature_info[-1]["reduction"])
        self.default_image_size = int(visual.image_size[0])
        self.image_mean = tuple(image_mean)
        self.image_std = tuple(image_std)
        self.merge_norm = nn.LayerNorm(self.width)
        self.set_trainable_layers(trainable_layers)

    @property
    def trunk(self) -> nn.Module:
        return self.vision.trunk

    def set_trainable_layers(self, n: int) -> None:
        """Freeze the tower except its last `n` stages (and the final conv if n > 0)."""
        self._freeze_all_but_last(self.trunk.stages, self.trunk.final_conv, n, "stages")

    def train(self, mode: bool = True):
        super().train(mode)
        self.vision.eval()  # frozen BatchNorm statistics, whatever the parent does
        return self

    def feature_map(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The map MobileCLIP pools: [B, 3, S, S] -> [B, C, S/stride, S/stride]."""
        return self.trunk.forward_features(pixel_values)

    def joint(self, cells: torch.Tensor) -> torch.Tensor:
        """Map cells [..., C] into the joint image-text space [..., E], each alone."""
        head = self.trunk.head
        return self.vision.head(head.fc(head.drop(cells)))

    def cell_embeddings(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """[B, 3, S, S] -> [B, E, h, w]: each cell of the pooled map in the joint space."""
        cells = self.joint(self.feature_map(pixel_values).permute(0, 2, 3, 1))  # [B, h, w, E]
        return cells.permute(0, 3, 1, 2)

    @property
    def crop_size(self) -> int:
        """Side of the crops `encode_crops` wants: the resolution the tower was trained at."""
        return self.default_image_size

    def encode_crops(self, crops: torch.Tensor) -> torch.Tensor:
        """MobileCLIP's pooled image embedding: [N, 3, c, c] -> [N, E] (open_clip's `encode_image`, unnormalised)."""
        return self.vision(crops)

    def region_tower(self, clip):
        """The distillation stage's view of this tower (`ovdet.distill.region_tower.region_tower` asks for it)."""
        from ovdet.distill.mean_pool_region_tower import MeanPoolRegionTower

        return MeanPoolRegionTower(self)

    def forward(self, pixel_values: torch.Tensor) -> DenseFeatures:
        """pixel_values: [B, 3, S, S] normalised, S a multiple of the stride."""
        size = pixel_values.shape[-1]
        if pixel_values.shape[-2] != size or size % self.stride:
            raise ValueError(
                f"input must be square with a side divisible by the stride {self.stride}, got {tuple(pixel_values.shape[-2:])}"
            )
        cells = self.cell_embeddings(pixel_values)  # [B, E, h, w]
        tokens = cells.flatten(2).transpose(1, 2)  # [B, h*w, E]
        return DenseFeatures(tokens=self.merge_norm(tokens), grid=tuple(cells.shape[-2:]))
