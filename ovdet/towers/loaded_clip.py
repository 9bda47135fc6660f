"""A loaded CLIP: its dense vision backbone and text tower, and what is needed to save it again
(`ovdet.towers.clip_saving.save_clip` writes it)."""

from __future__ import annotations

from dataclasses import dataclass
from torch import nn

from ovdet.towers.backbone import VisionBackbone
from ovdet.towers.text_tower import TextTower


@dataclass
class LoadedCLIP:
    """A CLIP split into a dense vision backbone and a text tower, plus what is needed to save it.

    `head_init` is offered by towers whose pretraining scale is the head's: those trained with a sigmoid
    loss (SigLIP, SigLIP2) give `logit_scale` and `logit_shift` for a detection head that computes
    `(cos + shift) * scale`, i.e. the pretraining logits `exp(t) * cos + b` with scale = exp(t),
    shift = b / exp(t); ALIGN's learned temperature gives scale = 1 / temperature, shift 0.
    """

    backbone: VisionBackbone
    text_tower: TextTower
    reference: str  # what the user named: a hub id or a folder
    # "hf" (transformers CLIP), "siglip", "owlvit", "owlv2", "align", "metaclip_2", "siglip2" (transformers: the
    # folder's model_type, "hf" for clip) or "open_clip"
    format: str
    model: nn.Module  # the whole CLIP, for save()
    tokenizer: object = None
    head_init: dict | None = None

    @classmethod
    def from_clip_model(cls, model, tokenizer, image_mean, image_std, reference: str, trainable_layers: int = 0,
                        head_init: dict | None = None) -> "LoadedCLIP":
        """The towers of a transformers `CLIPModel` (however it was obtained), format "hf"."""
        from ovdet.towers.text_hf import HFCLIPTextTower
        from ovdet.towers.vision_vit import CLIPVisionBackbone

        backbone = CLIPVisionBackbone(model.vision_model, image_mean, image_std, trainable_layers=trainable_layers)
        text = HFCLIPTextTower(model.text_model, model.text_projection, tokenizer, identity=reference)
        return cls(backbone=backbone, text_tower=text, reference=reference, format="hf", model=model,
                   tokenizer=tokenizer, head_init=head_init)
