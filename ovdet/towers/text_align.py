"""The text half of a `transformers` ALIGN (BERT) as the detector's text tower."""

from __future__ import annotations

import torch
from torch import nn

from ovdet.towers.text_tower import TextTower

CONTEXT_LENGTH = 64  # AlignProcessor's max_length: the length ALIGN's texts were cut to


class AlignTextTower(TextTower):
    """ALIGN's BERT and WordPiece tokenizer: the [CLS] token's last hidden state through `text_projection`.

    This is `AlignModel.get_text_features`: ALIGN ignores BERT's pooler (dense + tanh). The attention
    mask is passed, so padding does not change an embedding.

    Args:
        text_model: `AlignModel.text_model` (an `AlignTextModel`, BERT).
        text_projection: `AlignModel.text_projection` (hidden size -> the joint space).
        tokenizer: the checkpoint's own BERT tokenizer.
        identity: names the weights, for the text-embedding cache.
    """

    def __init__(self, text_model: nn.Module, text_projection: nn.Linear, tokenizer, identity: str):
        super().__init__()
        self.text_model = text_model
        self.text_projection = text_projection
        self.tokenizer = tokenizer
        self.identity = identity
        self.embed_dim = int(text_projection.out_features)
        self.context_length = min(CONTEXT_LENGTH, int(text_model.config.max_position_embeddings))

    def forward(self, texts: list[str]) -> torch.Tensor:
        device = self.text_projection.weight.device
        enc = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.context_length,
                             return_tensors="pt")
        inputs = {k: v.to(device) for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
        hidden = self.text_model(**inputs).last_hidden_state  # [N, T, H]
        return self.text_projection(hidden[:, 0])  # [N, E], the [CLS] position
