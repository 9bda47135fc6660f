"""A loaded CLIP: its dense vision backbone and text tower, and what is needed to save it again."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch import nn

from ovdet.towers.backbone import VisionBackbone
from ovdet.towers.text_tower import TextTower


@dataclass
class LoadedCLIP:
    """A CLIP split into a dense vision backbone and a text tower, plus what is needed to save it.

    `head_init` is offered by towers trained with a sigmoid loss (SigLIP): their `logit_scale`
    and `logit_shift` for a detection head that computes `(cos + shift) * scale`, i.e. the
    pretraining logits `exp(t) * cos + b` with scale = exp(t), shift = b / exp(t).
    """

    backbone: VisionBackbone
    text_tower: TextTower
    reference: str  # what the user named: a hub id or a folder
    format: str  # "hf" (transformers CLIP), "siglip", "owlvit", "owlv2" (transformers) or "open_clip"
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

    def save(self, folder: str | Path, dtype=None) -> None:
        """Write the CLIP (with any fine-tuned vision blocks) in its own format.

        `dtype` (e.g. torch.float16) applies to open_clip folders; transformers folders stay as loaded
        and get their tokenizer; CLIP and SigLIP folders also get a `preprocessor_config.json` with
        the tower's normalisation, so that a reload (and transformers' processors) see the same pixels.
        """
        folder = Path(folder)
        if self.format == "open_clip":
            from ovdet.towers.open_clip_io import save_open_clip

            save_open_clip(self.model, folder, **({"dtype": dtype} if dtype is not None else {}))
            return
        self.model.save_pretrained(str(folder))  # transformers: "hf", "siglip", "owlvit", "owlv2"
        if self.tokenizer is not None:
            self.tokenizer.save_pretrained(str(folder))
        processor = self._image_processor()
        if processor is not None:
            processor.save_pretrained(str(folder))

    def _image_processor(self):
        """transformers' image processor for a CLIP or SigLIP, with the backbone's mean/std (None for others)."""
        size = int(self.model.config.vision_config.image_size)
        mean, std = list(self.backbone.image_mean), list(self.backbone.image_std)
        if self.format == "siglip":
            from transformers import SiglipImageProcessor

            return SiglipImageProcessor(image_mean=mean, image_std=std, size={"height": size, "width": size})
        if self.format == "hf":
            from transformers import CLIPImageProcessor

            return CLIPImageProcessor(image_mean=mean, image_std=std, size={"shortest_edge": size},
                                      crop_size={"height": size, "width": size})
        return None
