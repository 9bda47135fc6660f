"""An open_clip ResNet CLIP tower (OpenAI's RN50-style `ModifiedResNet`) as a dense backbone."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ovdet.towers.backbone import DenseFeatures, VisionBackbone

DENSE_MODES = ("proj", "raw")
STAGES = ("layer1", "layer2", "layer3", "layer4")
FEATURE_STRIDES = (16, 32)


def _stage_channels(stage: nn.Module) -> int:
    """Output channels of a ResNet stage (its last Bottleneck's last conv, times the expansion)."""
    block = stage[-1]
    return block.conv3.out_channels if hasattr(block, "conv3") else block.bn2.num_features


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
        feature_stride: 32 uses the last feature map alone; 16 gives a twice finer region grid whose
            tokens join the raw layer3 channels to the (upsampled) layer4 tokens, so small objects
            get their own cells and boxes are regressed from finer detail.
    """

    convolutional = True

    def __init__(
        self,
        vision_model: nn.Module,
        image_mean: tuple[float, float, float],
        image_std: tuple[float, float, float],
        trainable_layers: int = 0,
        dense: str = "proj",
        global_merge: bool = False,
        feature_stride: int = 32,
    ):
        super().__init__()
        if dense not in DENSE_MODES:
            raise ValueError(f"dense must be one of {DENSE_MODES}, got {dense!r}")
        if global_merge and dense != "proj":
            raise ValueError("global_merge multiplies by the pooled embedding, so it needs dense='proj'")
        self.vision = vision_model
        self.dense = dense
        self.global_merge = global_merge
        self.stride = 32  # the input side must be a multiple of the tower's full stride
        size = vision_model.image_size
        self.default_image_size = size if isinstance(size, int) else int(size[0])
        self.image_mean = tuple(image_mean)
        self.image_std = tuple(image_std)
        self.set_feature_stride(feature_stride)
        self.set_trainable_layers(trainable_layers)

    def set_feature_stride(self, feature_stride: int) -> None:
        """Choose the region grid (16 or 32); resets the token LayerNorm, whose width follows."""
        if feature_stride not in FEATURE_STRIDES:
            raise ValueError(f"feature_stride must be one of {FEATURE_STRIDES}, got {feature_stride!r}")
        pool = self.vision.attnpool
        self.width = pool.c_proj.out_features if self.dense == "proj" else pool.v_proj.in_features
        if feature_stride == 16:
            self.width += _stage_channels(self.vision.layer3)
        self.feature_stride = feature_stride
        self.merge_norm = nn.LayerNorm(self.width)

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

    @property
    def region_roi_size(self) -> int:
        """RoIAlign side of a box on the layer3 map: layer3's grid at the tower's own resolution (2x the
        attention pool's grid), so a box the size of the whole input samples every layer3 cell."""
        grid = round((self.vision.attnpool.positional_embedding.shape[0] - 1) ** 0.5)
        return 2 * grid

    def pool_region_features(self, rois: torch.Tensor) -> torch.Tensor:
        """[K, C3, r, r] layer3 features RoI-aligned over boxes (r = `region_roi_size`) -> [K, E] joint-space
        embeddings (not normalised): the tower's own last stage and attention pool run on each box (Faster
        R-CNN's C4 head with CLIP's weights). The image is encoded once; only layer4 runs per box, on r x r."""
        return self.global_embedding(self.region_stage(rois))  # [K, C, r/2, r/2] -> [K, E]

    def region_stage(self, rois: torch.Tensor) -> torch.Tensor:
        """The tower's last stage on RoI-aligned layer3 features: [K, C3, r, r] -> [K, C, r/2, r/2] (what the
        attention pool, and a `RegionClassifier`, read)."""
        weight = next((p for p in self.vision.layer4.parameters() if p.is_floating_point()), None)
        if weight is not None:  # bf16 weights (set_precision): the input follows, as whole-tower calls are cast
            rois = rois.to(weight.dtype)
        return self.vision.layer4(rois)

    @property
    def region_stage_features(self) -> int:
        """Size of `region_stage`'s output flattened: C x (r/2)^2."""
        pos = self.vision.attnpool.positional_embedding  # [1 + g*g, C]
        return pos.shape[1] * (pos.shape[0] - 1)

    def feature_maps(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The last two ResNet stages: [B, 3, S, S] -> ([B, C3, S/16, S/16], [B, C, S/32, S/32])."""
        v = self.vision
        c3 = v.layer3(v.layer2(v.layer1(v.stem(pixel_values))))
        return c3, v.layer4(c3)

    def feature_map(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The last ResNet stage: [B, 3, S, S] -> [B, C, S/32, S/32]."""
        return self.feature_maps(pixel_values)[1]

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
        c3, fmap = self.feature_maps(pixel_values)  # [B, C3, 2h, 2w], [B, C, h, w]
        h, w = fmap.shape[-2:]
        tokens = fmap.flatten(2).transpose(1, 2)  # [B, h*w, C]
        if self.dense == "proj":
            pool = self.vision.attnpool
            tokens = pool.c_proj(pool.v_proj(tokens))  # [B, h*w, E]
        if self.global_merge:
            tokens = tokens * self.global_embedding(fmap)[:, None]  # [B, h*w, E]
        if self.feature_stride == 16:
            coarse = tokens.transpose(1, 2).reshape(tokens.shape[0], -1, h, w)  # [B, E, h, w]
            coarse = F.interpolate(coarse, size=c3.shape[-2:], mode="nearest")  # [B, E, 2h, 2w]
            h, w = c3.shape[-2:]
            tokens = torch.cat([coarse, c3], 1).flatten(2).transpose(1, 2)  # [B, h*w, E + C3] on the finer grid
        return DenseFeatures(tokens=self.merge_norm(tokens), grid=(h, w), region_map=c3)
