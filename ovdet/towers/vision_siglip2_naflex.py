"""A `transformers` SigLIP2 NaFlex vision tower (`Siglip2VisionModel`) as a dense backbone on ovdet's square input."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ovdet.towers.backbone import VisionBackbone
from ovdet.towers.cpu_attention import use_chunked_attention
from ovdet.towers.cpu_mlp import chunk_mlps
from ovdet.towers.vision_siglip import MERGES, SiglipVisionBackbone


def patchify(pixel_values: torch.Tensor, patch: int) -> torch.Tensor:
    """[B, C, H, W] -> [B, (H/p)*(W/p), p*p*C], rows of patches in row-major order, each patch (row, col, channel)
    flattened, as `Siglip2ImageProcessor` (`convert_image_to_patches`) feeds NaFlex."""
    b, c, h, w = pixel_values.shape
    x = pixel_values.reshape(b, c, h // patch, patch, w // patch, patch)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(b, (h // patch) * (w // patch), patch * patch * c)


class Siglip2NaflexBackbone(SiglipVisionBackbone):
    """SigLIP2 NaFlex patch tokens on ovdet's grid, merged with the MAP-pooled image embedding as SigLIP's are.

    NaFlex takes patch rows, not an image: ovdet patchifies its square padded input itself, gives every
    image the spatial shape (S/p, S/p) with no padding rows (the padding is pixels, as for every other
    tower), and resizes NaFlex's learned position grid to that shape (bilinear, antialiased) as NaFlex does.
    The tokens thus come back row-major on the S/p x S/p grid the head expects. Everything after `encode`
    (merge modes, freezing, the region view) is SigLIP's.

    Args:
        vision_model: `Siglip2Model.vision_model` (a `Siglip2VisionModel`).
        image_mean / image_std: pixel normalisation the tower was trained with (SigLIP2: 0.5 / 0.5).
        trainable_layers: 0 freezes the tower; N fine-tunes the last N blocks (and post_layernorm and the MAP head).
        merge: "pool" or "none", as `SiglipVisionBackbone`.
    """

    def __init__(
        self,
        vision_model: nn.Module,
        image_mean: tuple[float, float, float],
        image_std: tuple[float, float, float],
        trainable_layers: int = 0,
        merge: str = "pool",
    ):
        VisionBackbone.__init__(self)
        if merge not in MERGES:
            raise ValueError(f"merge must be one of {MERGES}, got {merge!r}")
        if merge == "pool" and not getattr(vision_model, "use_head", False):
            raise ValueError("this SigLIP2 vision tower has no MAP head (vision_use_head=False); use merge='none'")
        self.vision = vision_model
        cfg = vision_model.config
        self.merge = merge
        self.width = cfg.hidden_size
        self.stride = cfg.patch_size
        # the square whose patches are exactly the learned position grid (16 x 16 for max_num_patches 256)
        self.default_image_size = vision_model.embeddings.position_embedding_size * cfg.patch_size
        self.image_mean = tuple(image_mean)
        self.image_std = tuple(image_std)
        self.merge_norm = nn.LayerNorm(self.width, eps=cfg.layer_norm_eps)
        chunk_mlps(vision_model)
        use_chunked_attention(vision_model)  # bf16 on CPU only; fp32 keeps SDPA
        self.set_trainable_layers(trainable_layers)

    def position_embeddings(self, grid: tuple[int, int]) -> torch.Tensor:
        """NaFlex's learned position grid resized to `grid` (h, w): [1, h*w, D].

        Every image of an ovdet batch has the same shape, so this is one `F.interpolate` (bilinear, antialiased,
        what `Siglip2VisionEmbeddings.resize_positional_embeddings` computes per image as a weight matrix).
        Done here rather than there because the library's per-image shape checks (`torch._check`) have no ONNX op.
        """
        table = self.vision.embeddings.position_embedding.weight  # [g*g, D]
        g = self.vision.embeddings.position_embedding_size
        square = table.float().reshape(1, g, g, -1).permute(0, 3, 1, 2)  # [1, D, g, g]
        resized = F.interpolate(square, size=grid, mode="bilinear", align_corners=False, antialias=True)  # [1, D, h, w]
        return resized.flatten(2).transpose(1, 2).to(table.dtype)  # [1, h*w, D]

    def encode(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """NaFlex's own outputs for a square batch: patch tokens [B, h*w, D] (after post_layernorm), pooled [B, D].

        `Siglip2VisionModel.forward` with spatial shapes (S/p, S/p) and an all-ones pixel attention mask, step by
        step: patch rows through the patch embedding, plus the resized position grid, the encoder unmasked (no
        row is padding), post_layernorm, the MAP head.
        """
        vision = self.vision
        _, _, h, w = pixel_values.shape
        patches = patchify(pixel_values, self.stride)  # [B, h*w, p*p*C]
        positions = self.position_embeddings((h // self.stride, w // self.stride))  # [1, h*w, D]
        # the tower's dtype read off the position table: the patch Linear may be swapped for an int8 one (set_precision)
        embeds = vision.embeddings.patch_embedding(patches.to(positions.dtype))  # [B, h*w, D]
        hidden = embeds + positions  # [B, h*w, D]
        tokens = vision.post_layernorm(vision.encoder(inputs_embeds=hidden).last_hidden_state)  # [B, h*w, D]
        return tokens, vision.head(tokens) if vision.use_head else None
