"""A `transformers` CLIP ViT as a dense backbone, at any input resolution (OWL-ViT style)."""

from __future__ import annotations

import torch
from torch import nn
from transformers import CLIPVisionModel

from ovdet.towers.backbone import DenseFeatures, VisionBackbone
from ovdet.towers.cpu_attention import use_chunked_attention
from ovdet.towers.cpu_mlp import chunk_mlps


class CLIPVisionBackbone(VisionBackbone):
    """Patch tokens of a CLIP ViT with the class token merged in.

    Position embeddings are interpolated to the input size, so detection can run at a higher
    resolution than CLIP was trained at. As in OWL-ViT, each patch token is multiplied by the
    class token and layer-normalised (a new, trainable LayerNorm), which carries image-level
    context into every region.

    Args:
        vision_model: the CLIP vision tower (e.g. `CLIPModel.vision_model`).
        image_mean / image_std: pixel normalisation the tower was trained with.
        trainable_layers: 0 freezes the tower (F-VLM style); N fine-tunes the last N blocks.
    """

    def __init__(
        self,
        vision_model: CLIPVisionModel | nn.Module,
        image_mean: tuple[float, float, float],
        image_std: tuple[float, float, float],
        trainable_layers: int = 0,
    ):
        super().__init__()
        self.vision = vision_model
        cfg = vision_model.config
        self.width = cfg.hidden_size
        self.stride = cfg.patch_size
        self.default_image_size = cfg.image_size
        self.image_mean = tuple(image_mean)
        self.image_std = tuple(image_std)
        self.merge_norm = nn.LayerNorm(self.width, eps=cfg.layer_norm_eps)
        chunk_mlps(vision_model)
        use_chunked_attention(vision_model)  # bf16 on CPU: two GEMMs beat the flash kernel 2x; else SDPA as before
        self.set_trainable_layers(trainable_layers)

    def set_trainable_layers(self, n: int) -> None:
        """Freeze the tower except its last `n` encoder blocks (and the final LayerNorm if n > 0)."""
        self._freeze_all_but_last(self.vision.encoder.layers, self.vision.post_layernorm, n, "blocks")

    def patch_tokens(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """CLIP's own output tokens (after its final LayerNorm), class token first: [B, 1+h*w, D]."""
        out = self.vision(pixel_values=pixel_values, interpolate_pos_encoding=True)
        return self.vision.post_layernorm(out.last_hidden_state)

    def forward(self, pixel_values: torch.Tensor) -> DenseFeatures:
        """pixel_values: [B, 3, S, S] normalised, S a multiple of the patch size."""
        size = pixel_values.shape[-1]
        if pixel_values.shape[-2] != size or size % self.stride:
            raise ValueError(
                f"input must be square with a side divisible by the patch size {self.stride}, got {tuple(pixel_values.shape[-2:])}"
            )
        tokens = self.patch_tokens(pixel_values)  # [B, 1+h*w, D]
        cls, patches = tokens[:, :1], tokens[:, 1:]
        merged = self.merge_norm(patches * cls)  # [B, h*w, D]
        return DenseFeatures(tokens=merged, grid=self.grid_size(size))
