"""The text half of an open_clip CLIP as the detector's text tower."""

from __future__ import annotations

import torch
from torch import nn

from ovdet.towers.text_tower import TextTower


class OpenCLIPTextTower(TextTower):
    """open_clip's standalone `TextTransformer` plus its BPE tokenizer.

    Only the text modules are held, so freezing this tower never freezes the vision tower.

    Args:
        text_model: open_clip `TextTransformer` (`CustomTextCLIP.text`), projection included.
        tokenizer: callable, texts -> LongTensor [N, context_length] (open_clip `SimpleTokenizer`).
        identity: names the weights, for the text-embedding cache.
    """

    def __init__(self, text_model: nn.Module, tokenizer, identity: str):
        super().__init__()
        self.text = text_model
        self.tokenizer = tokenizer
        self.identity = identity
        self.embed_dim = int(text_model.output_dim)
        self.context_length = int(text_model.context_length)

    def forward(self, texts: list[str]) -> torch.Tensor:
        device = self.text.positional_embedding.device
        tokens = self.tokenizer(list(texts)).to(device)  # [N, L]
        return self.text(tokens)  # [N, E]
