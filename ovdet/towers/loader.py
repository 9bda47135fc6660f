"""Load a CLIP (hub id or local folder) into the two towers the detector uses, offline-safe."""

from __future__ import annotations

import json
from pathlib import Path

from ovdet.errors import ModelNotAvailableError
from ovdet.preprocess import OPENAI_MEAN, OPENAI_STD
from ovdet.towers.loaded_clip import LoadedCLIP


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
        from ovdet.towers.open_clip_io import load_open_clip

        return load_open_clip(Path(name), trainable_layers=trainable_layers)
    return _load_hf_clip(name, trainable_layers)


def _load_hf_clip(name: str, trainable_layers: int) -> LoadedCLIP:
    from transformers import CLIPModel
    from transformers.utils import logging as hf_logging

    from ovdet.towers.vision_vit import CLIPVisionBackbone
    from ovdet.towers.text_hf import HFCLIPTextTower

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
