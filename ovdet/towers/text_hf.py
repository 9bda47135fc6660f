"""The text half of a `transformers` CLIP-style model (CLIP, OWL-ViT, OWLv2) as the detector's text tower."""

from __future__ import annotations

import torch
from torch import nn

from ovdet.towers.text_tower import TextTower


class HFCLIPTextTower(TextTower):
    """The text half of a `transformers` CLIPModel: tokenizer, transformer, projection."""

    def __init__(self, text_model: nn.Module, text_projection: nn.Module, tokenizer, identity: str):
        super().__init__()
        self.text_model = text_model
        self.text_projection = text_projection
        self.tokenizer = tokenizer
        self.identity = identity
        self.embed_dim = text_projection.out_features
        self.context_length = text_model.config.max_position_embeddings

    def forward(self, texts: list[str]) -> torch.Tensor:
        device = self.text_projection.weight.device
        enc = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.context_length, return_tensors="pt"
        )
        out = self.text_model(input_ids=enc["input_ids"].to(device), attention_mask=enc["attention_mask"].to(device))
        return self.text_projection(out.pooler_output)  # [N, E]
