"""F-VLM's detector score for one-pass region scoring: a classifier of pooled regions, trained on base names.

Region scoring names a box by the tower's own pooled embedding (the VLM score, which carries CLIP's open
vocabulary). F-VLM adds the score of a classifier trained on the detection data's base names and combines
the two by a geometric mean, weighted more toward the trained one for base names and toward CLIP for novel
ones. This is that classifier: it reads the same pooled last-stage map the attention pool reads (no extra
backbone work) and maps it into the joint space, so the class weights are still the text embeddings of
whatever names are asked: the vocabulary stays an input, never a layer size.
"""

from __future__ import annotations

import torch
from torch import nn


class RegionClassifier(nn.Module):
    """Pooled region map [K, C, h, w] -> joint-space embeddings [K, E] (not normalised).

    Args:
        in_features: C x h x w of the map (`backbone.region_stage_features`).
        embed_dim: the joint space's size (the text embeddings').
        hidden: width of the one hidden layer.
    """

    def __init__(self, in_features: int, embed_dim: int, hidden: int = 512):
        super().__init__()
        # Feature standardisation learnt from the training regions (buffers: saved with the weights).
        self.register_buffer("mean", torch.zeros(in_features))
        self.register_buffer("std", torch.ones(in_features))
        self.mlp = nn.Sequential(nn.Linear(in_features, hidden), nn.GELU(), nn.Dropout(0.1), nn.Linear(hidden, embed_dim))

    def forward(self, region_maps: torch.Tensor) -> torch.Tensor:
        x = region_maps.flatten(1).to(self.mean.dtype)  # [K, C*h*w]
        return self.mlp((x - self.mean) / self.std).float()  # [K, E]
