"""A loaded CLIP: its dense vision backbone and text tower, and what is needed to save it again."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch import nn

from ovdet.towers.backbone import VisionBackbone
from ovdet.towers.text_tower import TextTower


@dataclass
class LoadedCLIP:
    """A CLIP split into a dense vision backbone and a text tower, plus what is needed to save it."""

    backbone: VisionBackbone
    text_tower: TextTower
    reference: str  # what the user named: a hub id or a folder
    format: str  # "hf" (transformers) or "open_clip"
    model: nn.Module  # the whole CLIP, for save()
    tokenizer: object = None

    def save(self, folder: str | Path, dtype=None) -> None:
        """Write the CLIP (with any fine-tuned vision blocks) in its own format.

        `dtype` (e.g. torch.float16) applies to open_clip folders; transformers folders stay as loaded.
        """
        folder = Path(folder)
        if self.format == "hf":
            self.model.save_pretrained(str(folder))
            if self.tokenizer is not None:
                self.tokenizer.save_pretrained(str(folder))
        else:
            from ovdet.towers.open_clip_io import save_open_clip

            save_open_clip(self.model, folder, **({"dtype": dtype} if dtype is not None else {}))
