"""An open_clip ResNet CLIP tower (OpenAI's RN50-style `ModifiedResNet`) as a dense backbone."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ovdet.models.backbone import DenseFeatures, VisionBackbone

DENSE_MODES = ("proj", "raw")
STAGES = ("layer1", "layer2", "layer3", "layer4")


class CLIPResNetBackbone(VisionBackbone):
    """Every cell of the last ResNet feature map is a region token (F-VLM's frozen CLIP backbone).

    `dense="proj"` sends each cell through the attention pool's value and output projections
    (MaskCLIP, F-VLM): that is what the pooled image embedding is a weighted sum of, so the
    tokens live in CLIP's joint image-text space (D = embed_dim). `dense="raw"` keeps the
    layer4 channels (D = 32 * width). With `global_merge`, tokens are multiplied by the
    attention-pooled image embedding (positional embedding interpolated to the grid), as the
    ViT backbone multiplies patch tokens by the class token. A new, trainable LayerNorm follows.
    BatchNorm statistics stay frozen (the tower is always in eval mode): detection batches are
    too small to re-estimate them.

    Args:
        vision_model: open_clip `ModifiedResNet` (`model.visual`).
        image_mean / image_std: pixel normalisation the tower was trained with.
        trainable_layers: 0 freezes the tower; N fine-tunes the last N stages (layer4, layer3, ...)
            and the attention pool.
        dense: "proj" or "raw", see above.
        global_merge: multiply tokens by the global image embedding (needs dense="proj").
    """

    def __init__(
        self,
        vision_model: nn.Module,
        image_mean: tuple[float, float, float],
        image_std: tuple[float, float, float],
        trainable_layers: int = 0,
        dense: str = "proj",
        global_merge: bool = False,
    ):
        super().__init__()
        if dense not in DENSE_MODES:
            raise ValueError(f"dense must be one of {DENSE_MODES}, got {dense!r}")
        if global_merge and dense != "proj":
            raise ValueError("global_merge multiplies by the pooled embedding, so it needs dense='proj'")
        self.vision = vision_model
        pool = vision_model.attnpool
        self.dense = dense
        self.global_merge = global_merge
        self.width = pool.c_proj.out_features if dense == "proj" else pool.v_proj.in_features
        self.stride = 32
        size = vision_model.image_size
        self.default_image_size = size if isinstance(size, int) else int(size[0])
        self.image_mean = tuple(image_mean)
        self.image_std = tuple(image_std)
        self.merge_norm = nn.LayerNorm(self.width)
        self.set_trainable_layers(trainable_layers)

    def set_trainable_layers(self, n: int) -> None:
        """Freeze the tower except its last `n` stages (and the attention pool if n > 0)."""
        stages = [getattr(self.vision, name) for name in STAGES]
        self._freeze_all_but_last(stages, self.vision.attnpool, n, "stages")

    def train(self, mode: bool = True):
        super().train(mode)
        self.vision.eval()  # frozen BatchNorm statistics, whatever the parent does
        return self

    @property
    def crop_size(self) -> int:
        """Side of the crops `encode_crops` wants: the resolution the tower was trained at."""
        return self.default_image_size

    def encode_crops(self, crops: torch.Tensor) -> torch.Tensor:
        """CLIP's pooled image embedding of object crops: [N, 3, c, c] -> [N, E] (for re-scoring)."""
        return self.vision(crops)

    def feature_map(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The last ResNet stage: [B, 3, S, S] -> [B, C, S/32, S/32]."""
        v = self.vision
        return v.layer4(v.layer3(v.layer2(v.layer1(v.stem(pixel_values)))))

    def global_embedding(self, fmap: torch.Tensor) -> torch.Tensor:
        """CLIP's pooled image embedding [B, E] at any grid size (positional embedding interpolated)."""
        pool = self.vision.attnpool
        b, c, h, w = fmap.shape
        pos = pool.positional_embedding  # [1+g*g, C]
        g = round((pos.shape[0] - 1) ** 0.5)
        if (h, w) != (g, g):
            grid = pos[1:].reshape(1, g, g, c).permute(0, 3, 1, 2)  # [1, C, g, g]
            grid = F.interpolate(grid, size=(h, w), mode="bicubic", align_corners=False)
            pos = torch.cat([pos[:1], grid.flatten(2)[0].T])  # [1+h*w, C]
        x = fmap.flatten(2).permute(2, 0, 1)  # [h*w, B, C]
        x = torch.cat([x.mean(0, keepdim=True), x]) + pos[:, None].to(x.dtype)  # [1+h*w, B, C]
        out, _ = F.multi_head_attention_forward(
            query=x[:1], key=x, value=x, embed_dim_to_check=c, num_heads=pool.num_heads,
            q_proj_weight=pool.q_proj.weight, k_proj_weight=pool.k_proj.weight, v_proj_weight=pool.v_proj.weight,
            in_proj_weight=None, in_proj_bias=torch.cat([pool.q_proj.bias, pool.k_proj.bias, pool.v_proj.bias]),
            bias_k=None, bias_v=None, add_zero_attn=False, dropout_p=0.0,
            out_proj_weight=pool.c_proj.weight, out_proj_bias=pool.c_proj.bias,
            use_separate_proj_weight=True, training=False, need_weights=False,
        )
        return out[0]  # [B, E]

    def forward(self, pixel_values: torch.Tensor) -> DenseFeatures:
        """pixel_values: [B, 3, S, S] normalised, S a multiple of 32."""
        size = pixel_values.shape[-1]
        if pixel_values.shape[-2] != size or size % self.stride:
            raise ValueError(
                f"input must be square with a side divisible by the stride {self.stride}, got {tuple(pixel_values.shape[-2:])}"
            )
        fmap = self.feature_map(pixel_values)  # [B, C, h, w]
        tokens = fmap.flatten(2).transpose(1, 2)  # [B, h*w, C]
        if self.dense == "proj":
            pool = self.vision.attnpool
            tokens = pool.c_proj(pool.v_proj(tokens))  # [B, h*w, E]
        if self.global_merge:
            tokens = tokens * self.global_embedding(fmap)[:, None]  # [B, h*w, E]
        return DenseFeatures(tokens=self.merge_norm(tokens), grid=tuple(fmap.shape[-2:]))
