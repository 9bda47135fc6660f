"""OpenAI CLIP's ResNet image tower (open_clip's `ModifiedResNet`), in open_clip's parameter layout.

Why not open_clip's own class: importing open_clip imports torchvision and transformers (3-3.5 s on a 2-core CPU,
more than `import torch`), which made `ovdet detect` with the embedded model take 3x `import torch`. These modules
hold the same parameters under the same names and compute the same function (tests compare them with open_clip's
on perturbed weights, number for number), so a folder open_clip saved loads into them strictly, and they save back
as open_clip reads them. Only inference and fine-tuning are needed here: no weight init, no `lock`.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

EXPANSION = 4  # a bottleneck's output channels over its width


class Bottleneck(nn.Module):
    """Three convolutions (1x1, 3x3, 1x1); a stride is an average pool before the last one (anti-aliased), and the
    shortcut pools and projects the same way."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.act2 = nn.ReLU(inplace=True)
        self.avgpool = nn.AvgPool2d(stride) if stride > 1 else nn.Identity()
        self.conv3 = nn.Conv2d(planes, planes * EXPANSION, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * EXPANSION)
        self.act3 = nn.ReLU(inplace=True)
        self.downsample = None
        if stride > 1 or inplanes != planes * EXPANSION:
            self.downsample = nn.Sequential(OrderedDict([
                ("-1", nn.AvgPool2d(stride)),
                ("0", nn.Conv2d(inplanes, planes * EXPANSION, 1, stride=1, bias=False)),
                ("1", nn.BatchNorm2d(planes * EXPANSION)),
            ]))  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C_in, H, W] -> [B, 4 * planes, H / stride, W / stride]"""
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.avgpool(self.act2(self.bn2(self.conv2(out))))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.act3(out + identity)


class AttentionPool2d(nn.Module):
    """CLIP's pooling: the mean of the grid, as the one query, attends over itself and every cell (with a learned
    position embedding for a `grid` x `grid` map)."""

    def __init__(self, grid: int, embed_dim: int, num_heads: int, output_dim: int | None = None):
        super().__init__()
        self.positional_embedding = nn.Parameter(torch.zeros(grid**2 + 1, embed_dim))
        self.k_proj = nn.Linear(embed_dim, embed_dim)
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.c_proj = nn.Linear(embed_dim, output_dim or embed_dim)
        self.num_heads = num_heads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C, h, w] (h, w: the trained grid) -> [B, output_dim]"""
        x = x.flatten(2).permute(2, 0, 1)  # [h*w, B, C]
        x = torch.cat([x.mean(dim=0, keepdim=True), x]) + self.positional_embedding[:, None].to(x.dtype)  # [1+h*w, B, C]
        out, _ = F.multi_head_attention_forward(
            query=x, key=x, value=x, embed_dim_to_check=x.shape[-1], num_heads=self.num_heads,
            q_proj_weight=self.q_proj.weight, k_proj_weight=self.k_proj.weight, v_proj_weight=self.v_proj.weight,
            in_proj_weight=None, in_proj_bias=torch.cat([self.q_proj.bias, self.k_proj.bias, self.v_proj.bias]),
            bias_k=None, bias_v=None, add_zero_attn=False, dropout_p=0.0,
            out_proj_weight=self.c_proj.weight, out_proj_bias=self.c_proj.bias,
            use_separate_proj_weight=True, training=self.training, need_weights=False,
        )  # fmt: skip
        return out[0]  # the mean token's row: [B, output_dim]


class ModifiedResNet(nn.Module):
    """A three-convolution stem with an average pool, four bottleneck stages (widths w, 2w, 4w, 8w, times 4 out),
    and an attention pool into the joint space.

    Args:
        layers: bottlenecks per stage, e.g. [3, 4, 6, 3] for RN50.
        output_dim: E, the joint image-text space.
        heads: attention-pool heads.
        image_size: the side the tower was trained at (its pool's grid is image_size / 32).
        width: w, the stem's width.
    """

    def __init__(self, layers: list[int], output_dim: int, heads: int, image_size: int = 224, width: int = 64):
        super().__init__()
        self.output_dim = output_dim
        self.image_size = image_size
        self.conv1 = nn.Conv2d(3, width // 2, kernel_size=3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width // 2)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(width // 2, width // 2, kernel_size=3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width // 2)
        self.act2 = nn.ReLU(inplace=True)
        self.conv3 = nn.Conv2d(width // 2, width, kernel_size=3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(width)
        self.act3 = nn.ReLU(inplace=True)
        self.avgpool = nn.AvgPool2d(2)
        inplanes = width
        stages = []
        for i, blocks in enumerate(layers):
            planes, stride = width * 2**i, 1 if i == 0 else 2
            stage = [Bottleneck(inplanes, planes, stride)] + [Bottleneck(planes * EXPANSION, planes) for _ in range(1, blocks)]
            stages.append(nn.Sequential(*stage))
            inplanes = planes * EXPANSION
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.attnpool = AttentionPool2d(image_size // 32, width * 32, heads, output_dim)

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        """[B, 3, S, S] -> [B, w, S/4, S/4]"""
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.act2(self.bn2(self.conv2(x)))
        x = self.act3(self.bn3(self.conv3(x)))
        return self.avgpool(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, 3, S, S] (S = image_size) -> [B, E], CLIP's image embedding (not normalised)"""
        x = self.layer4(self.layer3(self.layer2(self.layer1(self.stem(x)))))
        return self.attnpool(x)
