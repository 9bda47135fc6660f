"""A `transformers` SigLIP vision tower as a dense backbone, at any input resolution."""

from __future__ import annotations

import torch
from torch import nn

from ovdet.towers.backbone import DenseFeatures, VisionBackbone
from ovdet.towers.cpu_attention import use_chunked_attention
from ovdet.towers.cpu_mlp import chunk_mlps

MERGES = ("pool", "none")


class SiglipVisionBackbone(VisionBackbone):
    """Patch tokens of a SigLIP ViT, merged with the image's pooled embedding.

    SigLIP has no class token: its image embedding is the MAP head's attention-pooled output
    (`vision_model.head`), already in the joint space (there is no visual projection). The
    model's `last_hidden_state` has `post_layernorm` applied, so it is used as it is.

    Merge modes:
        "pool" (default): each patch token times the pooled output, then a new LayerNorm: the
            OWL-ViT class-token merge of the CLIP ViT backbone with the pooled output in the class
            token's place, so every region carries image-level context and all ViT families give
            the head the same kind of features.
        "none": the patch tokens and the new LayerNorm only (no image-level context; the MAP head
            still runs inside the vision model).

    Args:
        vision_model: the SigLIP vision tower (`SiglipModel.vision_model`).
        image_mean / image_std: pixel normalisation the tower was trained with (SigLIP: 0.5 / 0.5).
        trainable_layers: 0 freezes the tower; N fine-tunes the last N blocks (and the final
            LayerNorm and MAP head).
        merge: "pool" or "none", see above.
    """

    def __init__(
        self,
        vision_model: nn.Module,
        image_mean: tuple[float, float, float],
        image_std: tuple[float, float, float],
        trainable_layers: int = 0,
        merge: str = "pool",
    ):
        super().__init__()
        if merge not in MERGES:
            raise ValueError(f"merge must be one of {MERGES}, got {merge!r}")
        if merge == "pool" and not getattr(vision_model, "use_head", False):
            raise ValueError("this SigLIP vision tower has no MAP head (vision_use_head=False); use merge='none'")
        self.vision = vision_model
        cfg = vision_model.config
        self.merge = merge
        self.width = cfg.hidden_size
        self.stride = cfg.patch_size
        # The patch conv drops a remainder (so400m/14 at 384 px sees 27 x 27 patches from 378 px).
        self.default_image_size = (cfg.image_size // cfg.patch_size) * cfg.patch_size
        self.image_mean = tuple(image_mean)
        self.image_std = tuple(image_std)
        self.merge_norm = nn.LayerNorm(self.width, eps=cfg.layer_norm_eps)
        chunk_mlps(vision_model)
        use_chunked_attention(vision_model)  # bf16 on CPU only; fp32 keeps SDPA
        self.set_trainable_layers(trainable_layers)

    def set_trainable_layers(self, n: int) -> None:
        """Freeze the tower except its last `n` encoder blocks (and, if n > 0, post_layernorm and the MAP head)."""
        final = [self.vision.post_layernorm] + ([self.vision.head] if getattr(self.vision, "use_head", False) else [])
        self._freeze_all_but_last(self.vision.encoder.layers, nn.ModuleList(final), n, "blocks")

    def encode(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """SigLIP's own outputs: patch tokens [B, h*w, D] (after post_layernorm) and pooled [B, D] (or None)."""
        out = self.vision(pixel_values=pixel_values, interpolate_pos_encoding=True)
        return out.last_hidden_state, out.pooler_output

    def forward(self, pixel_values: torch.Tensor) -> DenseFeatures:
        """pixel_values: [B, 3, S, S] normalised, S a multiple of the patch size."""
        size = pixel_values.shape[-1]
        if pixel_values.shape[-2] != size or size % self.stride:
            raise ValueError(
                f"input must be square with a side divisible by the patch size {self.stride}, got {tuple(pixel_values.shape[-2:])}"
            )
        tokens, pooled = self.encode(pixel_values)  # [B, h*w, D], [B, D]
        if self.merge == "pool":
            tokens = tokens * pooled[:, None, :]  # [B, h*w, D]
        return DenseFeatures(tokens=self.merge_norm(tokens), grid=self.grid_size(size))
