"""The text half of a `transformers` SigLIP (or fixed-resolution SigLIP2) as the detector's text tower."""

from __future__ import annotations

import torch
from torch import nn

from ovdet.towers.text_tower import TextTower


class SiglipTextTower(TextTower):
    """SigLIP's text model and tokenizer, called the way SigLIP was trained.

    SigLIP pools the text at the last position and was trained on texts padded to the full
    context (64 tokens) with no attention mask, so every text is padded to `max_length` and no
    mask is passed: a mask changes the embeddings. `pooler_output` is already through the text
    head, in the joint space.

    Args:
        text_model: `SiglipModel.text_model` (a `SiglipTextModel`).
        tokenizer: the checkpoint's own tokenizer (SigLIP: sentencepiece; SigLIP2: Gemma).
        identity: names the weights, for the text-embedding cache.
    """

    def __init__(self, text_model: nn.Module, tokenizer, identity: str):
        super().__init__()
        self.text_model = text_model
        self.tokenizer = tokenizer
        self.identity = identity
        self.embed_dim = int(text_model.head.out_features)  # the projection size; SigLIP: the hidden size
        self.context_length = int(text_model.config.max_position_embeddings)

    def forward(self, texts: list[str]) -> torch.Tensor:
        device = self.text_model.head.weight.device
        enc = self.tokenizer(
            list(texts), padding="max_length", truncation=True, max_length=self.context_length, return_tensors="pt"
        )
        return self.text_model(input_ids=enc["input_ids"].to(device)).pooler_output  # [N, E]
