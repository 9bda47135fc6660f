"""A tiny randomly initialised CLIP saved with `save_pretrained`, for offline tests of the real-CLIP path."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import CLIPConfig, CLIPModel

from ovdet.text.tokenizer import CONTEXT_LENGTH


def tiny_clip_config(image_size: int = 32, patch_size: int = 8) -> CLIPConfig:
    """Small enough to run in milliseconds; the vocabulary stays OpenAI's 49408 tokens."""
    return CLIPConfig(
        text_config=dict(
            vocab_size=49408, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=2, max_position_embeddings=CONTEXT_LENGTH,
        ),
        vision_config=dict(
            hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
            image_size=image_size, patch_size=patch_size,
        ),
        projection_dim=24,
    )


def save_tiny_clip(folder: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    CLIPModel(tiny_clip_config()).eval().save_pretrained(str(folder))
    return folder
