"""An open_clip ResNet CLIP folder built from ovdet's own modules, so loading it never imports open_clip.

`light_model(config)` gives a `ResNetCLIP` (the `CustomTextCLIP` parameter layout: `visual.*`, `text.*`,
`logit_scale`) for the configurations `ModifiedResNet` and `CLIPTextTransformer` cover, which are the ones
`build_open_clip` writes (the embedded model's among them); any other key sends the folder to open_clip itself.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from ovdet.towers.clip_text_transformer import CLIPTextTransformer
from ovdet.towers.modified_resnet import ModifiedResNet

MODEL_KEYS = {"embed_dim", "vision_cfg", "text_cfg", "custom_text", "quick_gelu"}
VISION_KEYS = {"layers", "width", "image_size", "head_width"}
TEXT_KEYS = {"context_length", "vocab_size", "width", "heads", "layers", "mlp_ratio"}
VISION_DEFAULTS = {"width": 768, "image_size": 224, "head_width": 64}  # open_clip's CLIPVisionCfg
TEXT_DEFAULTS = {"context_length": 77, "vocab_size": 49408, "width": 512, "heads": 8, "layers": 12, "mlp_ratio": 4.0}


class ResNetCLIP(nn.Module):
    """A ResNet image tower, a text tower and the learned logit scale, named as open_clip's `CustomTextCLIP`."""

    def __init__(self, embed_dim: int, vision_cfg: dict, text_cfg: dict, quick_gelu: bool = False):
        super().__init__()
        vision = {**VISION_DEFAULTS, **vision_cfg}
        text = {**TEXT_DEFAULTS, **text_cfg}
        self.visual = ModifiedResNet(
            list(vision["layers"]), output_dim=embed_dim, heads=vision["width"] * 32 // vision["head_width"],
            image_size=vision["image_size"], width=vision["width"],
        )  # fmt: skip
        self.text = CLIPTextTransformer(**text, output_dim=embed_dim, quick_gelu=quick_gelu)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def encode_image(self, image: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        """[B, 3, S, S] -> [B, E], as open_clip's `encode_image`."""
        features = self.visual(image)
        return F.normalize(features, dim=-1) if normalize else features

    def encode_text(self, text: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        """[N, L] token ids -> [N, E], as open_clip's `encode_text`."""
        features = self.text(text)
        return F.normalize(features, dim=-1) if normalize else features


def light_config(model_cfg: dict) -> bool:
    """True when `ResNetCLIP` computes exactly what open_clip would build from `model_cfg`."""
    vision, text = model_cfg.get("vision_cfg", {}), model_cfg.get("text_cfg", {})
    return (
        set(model_cfg) <= MODEL_KEYS and bool(model_cfg.get("custom_text"))
        and isinstance(vision, dict) and set(vision) <= VISION_KEYS and isinstance(vision.get("layers"), (list, tuple))
        and isinstance(text, dict) and set(text) <= TEXT_KEYS
    )  # fmt: skip


def light_model(config: dict, device: str | torch.device = "meta") -> nn.Module | None:
    """A `ResNetCLIP` for an `open_clip_config.json`, or None where open_clip must build it. On the meta device
    (the default) it holds no weights yet: `load_state_dict(..., assign=True)` gives it the file's tensors, with no
    random initialisation and no second copy."""
    cfg = config.get("model_cfg", {})
    if not light_config(cfg):
        return None
    with torch.device(device):
        model = ResNetCLIP(int(cfg["embed_dim"]), dict(cfg["vision_cfg"]), dict(cfg["text_cfg"]),
                           quick_gelu=bool(cfg.get("quick_gelu", False)))
    model.open_clip_config = copy.deepcopy(config)  # a plain attribute: save_open_clip reads it
    return model
