"""Load a CLIP (hub id or local folder) into the two towers the detector uses, offline-safe."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from ovdet.errors import ModelNotAvailableError
from ovdet.models.backbone import VisionBackbone
from ovdet.models.text_tower import TextTower

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


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
            from ovdet.models.open_clip_io import save_open_clip

            save_open_clip(self.model, folder, **({"dtype": dtype} if dtype is not None else {}))


def detect_format(name_or_path: str) -> str:
    """"open_clip" for a folder with `open_clip_config.json`, else "hf" (transformers)."""
    path = Path(name_or_path)
    if path.is_dir() and (path / "open_clip_config.json").is_file():
        return "open_clip"
    return "hf"


def load_clip(name_or_path: str | Path, trainable_layers: int = 0) -> LoadedCLIP:
    """Load a CLIP by hub id or folder; towers come back frozen except the last `trainable_layers`.

    Raises:
        ModelNotAvailableError: the id is not cached and no hub can be reached, or the folder is not a CLIP.
    """
    name = str(name_or_path)
    if detect_format(name) == "open_clip":
        from ovdet.models.open_clip_io import load_open_clip

        return load_open_clip(Path(name), trainable_layers=trainable_layers)
    return _load_hf_clip(name, trainable_layers)


def _load_hf_clip(name: str, trainable_layers: int) -> LoadedCLIP:
    from transformers import CLIPModel
    from transformers.utils import logging as hf_logging

    from ovdet.models.clip_vit_backbone import CLIPVisionBackbone
    from ovdet.models.text_tower import HFCLIPTextTower

    path = Path(name)
    looks_local = path.exists() or name.startswith((".", "/", "~")) or name.count("/") > 1
    if looks_local and not (path / "config.json").is_file():
        raise ModelNotAvailableError(
            f"model folder '{name}' has no config.json; pass an ovdet model folder, a CLIP folder saved with "
            "save_pretrained, or a hub id such as openai/clip-vit-base-patch32"
        )
    hf_logging.disable_progress_bar()  # one line per model load is noise in a CLI
    try:
        # SDPA: PyTorch's fused attention kernels (flash / memory-efficient on GPU, fused on CPU).
        model = CLIPModel.from_pretrained(name, attn_implementation="sdpa")
    except (OSError, ValueError) as err:
        raise ModelNotAvailableError(
            f"model '{name}' is not available offline (no model hub can be reached and it is not in the local cache); "
            f"download it on a machine with access (e.g. `CLIPModel.from_pretrained('{name}').save_pretrained('DIR')`) "
            f"and pass --model DIR  [{err.__class__.__name__}]"
        ) from None
    model.eval()
    tokenizer = _tokenizer_for(path)
    mean, std = _normalisation_for(path)
    backbone = CLIPVisionBackbone(model.vision_model, mean, std, trainable_layers=trainable_layers)
    text = HFCLIPTextTower(model.text_model, model.text_projection, tokenizer, identity=name)
    return LoadedCLIP(backbone=backbone, text_tower=text, reference=name, format="hf", model=model, tokenizer=tokenizer)


def _tokenizer_for(path: Path):
    """The folder's own tokenizer when it has one, else OpenAI's BPE derived offline."""
    from ovdet.text.tokenizer import clip_tokenizer

    if path.is_dir() and ((path / "tokenizer.json").is_file() or (path / "vocab.json").is_file()):
        from transformers import CLIPTokenizer

        return CLIPTokenizer.from_pretrained(str(path))
    return clip_tokenizer()


def _normalisation_for(path: Path) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Pixel mean/std from the folder's preprocessor config, else OpenAI CLIP's."""
    cfg = path / "preprocessor_config.json"
    if path.is_dir() and cfg.is_file():
        data = json.loads(cfg.read_text())
        if "image_mean" in data and "image_std" in data:
            return tuple(data["image_mean"]), tuple(data["image_std"])
    return OPENAI_MEAN, OPENAI_STD
