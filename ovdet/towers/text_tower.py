"""The text-tower interface: strings in, embeddings in CLIP's joint space out (one class per format implements it)."""

from __future__ import annotations

import torch
from torch import nn


class TextTower(nn.Module):
    """Base class: `forward(texts) -> [N, E]` unnormalised embeddings in CLIP's joint space.

    `identity` names the weights (a path or hub id) so that cached embeddings are never shared
    between different models.
    """

    identity: str
    embed_dim: int

    def forward(self, texts: list[str]) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError
