"""Tiny EVA-CLIP and MobileCLIP folders for tests, written by open_clip itself (`save_for_hf`).

open_clip builds a timm tower from its name alone (no size arguments), so tiny towers are registered in timm
under names of the families ovdet maps, each the real architecture function with small sizes. A registration
lives in this process only: tests run `ovdet` in-process (`ovdet.cli.main.main`), never as a subprocess.
"""

from __future__ import annotations

from pathlib import Path

import torch
from timm.models import register_model
from timm.models.eva import eva02_base_patch16_clip_224
from timm.models.fastvit import fastvit_mci0, fastvit_mci3

MEAN, STD = (0.48, 0.45, 0.40), (0.27, 0.26, 0.28)
TEXT_CFG = {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}


@register_model
def eva02_tiny_patch8_clip_32(pretrained: bool = False, **kwargs):
    """EVA-CLIP-B's architecture (SwiGLU, sub-LN, 2-D RoPE from a 4 x 4 reference grid) at 32 px, width 32."""
    tiny = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, ref_feat_shape=(4, 4))
    return eva02_base_patch16_clip_224(pretrained=False, **dict(tiny, **kwargs))


@register_model
def fastvit_mci_tiny(pretrained: bool = False, **kwargs):
    """MCi0's architecture (RepMixer stages, attention last, conditional position encoding), stride 32."""
    tiny = dict(layers=(1, 1, 1, 1), embed_dims=(8, 16, 32, 64), mlp_ratios=(2, 2, 2, 2))
    return fastvit_mci0(pretrained=False, **dict(tiny, **kwargs))


@register_model
def fastvit_mci_tiny5(pretrained: bool = False, **kwargs):
    """MCi3's architecture (five stages, LayerNorm2d, attention in the last two), stride 64."""
    tiny = dict(layers=(1, 1, 1, 1, 1), embed_dims=(8, 16, 32, 64, 64), mlp_ratios=(2, 2, 2, 2, 2))
    return fastvit_mci3(pretrained=False, **dict(tiny, **kwargs))


def eva_cfg(**text) -> dict:
    """EVA02-B-16's open_clip config, shrunk (timm_pool "token", no extra projection, custom text)."""
    return {"embed_dim": 16, "custom_text": True,
            "vision_cfg": {"image_size": 32, "timm_model_name": "eva02_tiny_patch8_clip_32",
                           "timm_model_pretrained": False, "timm_pool": "token", "timm_proj": None},
            "text_cfg": dict(TEXT_CFG, **text)}


def mobileclip_cfg(timm_model_name: str = "fastvit_mci_tiny", image_size: int = 64, **text) -> dict:
    """MobileCLIP-S1's open_clip config, shrunk (timm_pool "avg", no causal mask in the text tower)."""
    return {"embed_dim": 16, "custom_text": True,
            "vision_cfg": {"image_size": image_size, "timm_model_name": timm_model_name, "timm_model_pretrained": False,
                           "timm_pool": "avg", "timm_proj": None, "timm_drop": 0.0, "timm_drop_path": 0.0},
            "text_cfg": dict(TEXT_CFG, no_causal_mask=True, **text)}


class _NoTokenizer:
    """open_clip's save_for_hf saves a tokenizer; these folders use OpenAI's BPE, which needs no files."""

    def save_pretrained(self, folder):
        pass


def save_timm_clip(folder: Path, model_cfg: dict, seed: int = 0) -> Path:
    """A random open_clip model of `model_cfg`, every weight moved by 0.05 * randn and BatchNorm statistics made
    non-default (so a wrong mapping shows), saved the way open_clip saves for the hub."""
    import open_clip
    from open_clip.push_to_hf_hub import save_for_hf

    torch.manual_seed(seed)
    cls = open_clip.CustomTextCLIP if model_cfg.get("custom_text") else open_clip.CLIP
    model = cls(**{k: v for k, v in model_cfg.items() if k != "custom_text"})
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0.0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    model.visual.image_mean, model.visual.image_std = MEAN, STD
    save_for_hf(model.eval(), _NoTokenizer(), model_cfg, folder, safe_serialization=True)
    return folder


def native(folder: Path):
    """open_clip's own model and tokenizer of a folder (the reference)."""
    import open_clip

    return open_clip.create_model(f"local-dir:{folder}").eval(), open_clip.get_tokenizer(f"local-dir:{folder}")
