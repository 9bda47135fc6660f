"""EVA-CLIP's vision tower (open_clip `TimmModel` around a timm `eva02_*_clip_*` Eva) as a dense backbone."""

from __future__ import annotations

import torch
from torch import nn

from ovdet.towers.backbone import DenseFeatures, VisionBackbone


class EvaVisionBackbone(VisionBackbone):
    """EVA-CLIP's patch tokens with the class token merged in (as the CLIP ViT backbone does).

    The trunk is timm's Eva built with `dynamic_img_size=True`, so at any input size timm resamples the absolute
    position embedding and rebuilds the 2-D rotary embedding for the grid (relative to the trunk's
    `ref_feat_shape`, as EVA does); nothing is hand-written here. EVA-CLIP pools on the class token after the
    trunk's final LayerNorm, then projects (`trunk.head`, plus open_clip's own head when it has one).

    Args:
        visual: open_clip `TimmModel` (`model.visual`) whose `trunk` is a timm `Eva`.
        image_mean / image_std: pixel normalisation the tower was trained with.
        trainable_layers: 0 freezes the tower; N fine-tunes the last N blocks and the final LayerNorm.
    """

    def __init__(
        self,
        visual: nn.Module,
        image_mean: tuple[float, float, float],
        image_std: tuple[float, float, float],
        trainable_layers: int = 0,
    ):
        super().__init__()
        trunk = visual.trunk
        if not getattr(trunk, "dynamic_img_size", False):
            raise ValueError("the Eva trunk must be built with dynamic_img_size=True (open_clip_timm.build_timm_clip)")
        self.vision = visual
        self.width = int(trunk.embed_dim)
        self.stride = int(trunk.patch_embed.patch_size[0])
        self.default_image_size = int(trunk.patch_embed.img_size[0])
        self.image_mean = tuple(image_mean)
        self.image_std = tuple(image_std)
        self.merge_norm = nn.LayerNorm(self.width, eps=getattr(trunk.norm, "eps", 1e-6))
        self.set_trainable_layers(trainable_layers)

    @property
    def trunk(self) -> nn.Module:
        return self.vision.trunk

    def set_trainable_layers(self, n: int) -> None:
        """Freeze the tower except its last `n` Eva blocks (and the final LayerNorm if n > 0)."""
        self._freeze_all_but_last(self.trunk.blocks, self.trunk.norm, n, "blocks")

    def patch_tokens(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The trunk's output tokens (after its final LayerNorm), class token first: [B, 1+h*w, D]."""
        return self.trunk.forward_features(pixel_values)

    def joint(self, tokens: torch.Tensor) -> torch.Tensor:
        """Tokens [..., D] into the joint image-text space [..., E], each alone, as the pooled token is projected."""
        trunk = self.trunk
        return self.vision.head(trunk.head(trunk.head_drop(trunk.fc_norm(tokens))))

    def pooled(self, tokens: torch.Tensor) -> torch.Tensor:
        """open_clip's image embedding from the trunk's tokens: the class token, projected. [B, 1+h*w, D] -> [B, E]."""
        return self.joint(tokens[:, 0])

    @property
    def crop_size(self) -> int:
        """Side of the crops `encode_crops` wants: the resolution the tower was trained at."""
        return self.default_image_size

    def encode_crops(self, crops: torch.Tensor) -> torch.Tensor:
        """EVA-CLIP's pooled image embedding: [N, 3, c, c] -> [N, E] (open_clip's `encode_image`, unnormalised)."""
        return self.vision(crops)

    def region_tower(self, clip):
        """The distillation stage's view of this tower (`ovdet.distill.region_tower.region_tower` asks for it)."""
        from ovdet.towers.eva_region_tower import EvaRegionTower

        return EvaRegionTower(self)

    def forward(self, pixel_values: torch.Tensor) -> DenseFeatures:
        """pixel_values: [B, 3, S, S] normalised, S a multiple of the patch size."""
        size = pixel_values.shape[-1]
        if pixel_values.shape[-2] != size or size % self.stride:
            raise ValueError(
                f"input must be square with a side divisible by the patch size {self.stride}, got {tuple(pixel_values.shape[-2:])}"
            )
        tokens = self.patch_tokens(pixel_values)  # [B, P+h*w, D], P prefix tokens (the class token first)
        cls, patches = tokens[:, :1], tokens[:, self.trunk.num_prefix_tokens :]
        merged = self.merge_norm(patches * cls)  # [B, h*w, D]
        return DenseFeatures(tokens=merged, grid=self.grid_size(size))
