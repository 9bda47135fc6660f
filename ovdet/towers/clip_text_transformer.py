"""CLIP's causal text transformer (open_clip's default `TextTransformer`), in open_clip's parameter layout.

Written here for the reason `modified_resnet` gives (open_clip's import costs more than torch's). It covers
open_clip's plain text tower: causal mask, the end token's features (the largest token id), a projection matrix
without bias, GELU or QuickGELU; `open_clip_resnet.light_config` sends every other configuration to open_clip.
Tests compare it with open_clip's on perturbed weights.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn


class LayerNorm(nn.LayerNorm):
    """LayerNorm that returns its input's dtype, as open_clip's does."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps).to(x.dtype)


class QuickGELU(nn.Module):
    """OpenAI CLIP's GELU approximation, x * sigmoid(1.702 x): the OpenAI weights were trained with it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class ResidualAttentionBlock(nn.Module):
    """Pre-norm block: x + attn(ln_1(x)), then x + mlp(ln_2(x)); sequences are batch-first."""

    def __init__(self, width: int, heads: int, mlp_ratio: float = 4.0, quick_gelu: bool = False):
        super().__init__()
        hidden = int(width * mlp_ratio)
        self.ln_1 = LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ln_2 = LayerNorm(width)
        self.mlp = nn.Sequential(OrderedDict([
            ("c_fc", nn.Linear(width, hidden)),
            ("gelu", QuickGELU() if quick_gelu else nn.GELU()),
            ("c_proj", nn.Linear(hidden, width)),
        ]))  # fmt: skip

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor) -> torch.Tensor:
        """[N, L, D] -> [N, L, D]; attn_mask [L, L] additive."""
        y = self.ln_1(x)
        x = x + self.attn(y, y, y, need_weights=False, attn_mask=attn_mask.to(y.dtype))[0]
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    """The stack of blocks (`resblocks`, open_clip's name)."""

    def __init__(self, width: int, layers: int, heads: int, mlp_ratio: float = 4.0, quick_gelu: bool = False):
        super().__init__()
        self.width, self.layers = width, layers
        self.resblocks = nn.ModuleList(ResidualAttentionBlock(width, heads, mlp_ratio, quick_gelu) for _ in range(layers))

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor) -> torch.Tensor:
        for block in self.resblocks:
            x = block(x, attn_mask)
        return x


class CLIPTextTransformer(nn.Module):
    """Token ids [N, L] -> the end token's features, projected: [N, E] (not normalised).

    Args:
        context_length: L, the positions the tower has.
        vocab_size: token ids (49408 for OpenAI's BPE).
        width / heads / layers / mlp_ratio: the transformer.
        output_dim: E, the joint image-text space.
        quick_gelu: QuickGELU (OpenAI's weights) instead of GELU.
    """

    def __init__(self, context_length: int = 77, vocab_size: int = 49408, width: int = 512, heads: int = 8,
                 layers: int = 12, mlp_ratio: float = 4.0, output_dim: int = 512, quick_gelu: bool = False):
        super().__init__()
        self.context_length, self.vocab_size = context_length, vocab_size
        self.width, self.heads, self.output_dim = width, heads, output_dim
        # `_weight`: no random init, whose normal_ on the meta device imports torch._dynamo (1.5 s)
        self.token_embedding = nn.Embedding(vocab_size, width, _weight=torch.empty(vocab_size, width))
        self.positional_embedding = nn.Parameter(torch.zeros(context_length, width))
        self.transformer = Transformer(width, layers, heads, mlp_ratio, quick_gelu)
        self.ln_final = LayerNorm(width)
        self.text_projection = nn.Parameter(torch.zeros(width, output_dim))

    def forward(self, text: torch.Tensor) -> torch.Tensor:
        """text [N, L] token ids -> [N, E]"""
        dtype = self.transformer.resblocks[0].mlp.c_fc.weight.dtype if self.transformer.layers else torch.float32
        length = text.shape[1]
        x = self.token_embedding(text).to(dtype) + self.positional_embedding[:length].to(dtype)  # [N, L, D]
        mask = torch.full((length, length), float("-inf"), device=x.device).triu_(1)  # [L, L]: no look ahead
        x = self.ln_final(self.transformer(x, mask))  # [N, L, D]
        pooled = x[torch.arange(x.shape[0], device=x.device), text.argmax(dim=-1)]  # [N, D]: the end token's row
        return pooled @ self.text_projection  # [N, E]
