"""The models benchmarked: random-weight CLIP ViTs (no download) saved once, as ovdet and as OwlViT load them."""

from __future__ import annotations

import contextlib
from pathlib import Path

# Vision towers of OpenAI's CLIP (and OWL-ViT) by name; the text tower is CLIP's standard one.
VISION_SPECS = {
    "b32": dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12, patch_size=32),
    "b16": dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12, patch_size=16),
    # --quick: small enough for a test, same code path
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2, patch_size=16),
}
TEXT_SPECS = {
    "standard": dict(hidden_size=512, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=8),
    "tiny": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2),
}
PROJECTION_DIM = {"standard": 512, "tiny": 32}
EMBEDDED = "embedded"  # ovdet's shipped ShapeWorld model (ResNet CLIP, scoring as saved); no OwlViT twin
# The embedded model scored three ways, each timed as its own model: as saved (one-pass region scoring),
# with CLIP crop re-scoring in its place (the previous shipped model's path: same layers, 32 crops per
# image re-encoded), and by the head's own region embeddings alone (the old dense path): `--scoring` modes.
EMBEDDED_VARIANTS = {EMBEDDED: "model", "embedded-crops": "crops", "embedded-dense": "head"}


def embedded_scoring(detector, model: str) -> None:
    """Set the embedded model's scoring to the variant `model` names (EMBEDDED_VARIANTS)."""
    from ovdet.models.scoring_modes import apply_scoring

    apply_scoring(detector, EMBEDDED_VARIANTS[model])


OWLV2 = "owlv2"  # OWLv2 B/16 at 960 px: one Owlv2ForObjectDetection folder that both sides load (identical weights)
OWLV2_SIZE = 960


def text_kind(model: str) -> str:
    return "tiny" if model == "tiny" else "standard"


def configs(model: str, image_size: int):
    """The CLIPConfig and OwlViTConfig of one benchmarked model, identical tower sizes."""
    from transformers import CLIPConfig, OwlViTConfig

    from ovdet.text.tokenizer import CONTEXT_LENGTH

    if model not in VISION_SPECS:
        raise ValueError(f"unknown benchmark model {model!r}; use {sorted(VISION_SPECS)} or {EMBEDDED!r}")
    kind = text_kind(model)
    vision = dict(VISION_SPECS[model], image_size=image_size)
    text = dict(TEXT_SPECS[kind], vocab_size=49408, max_position_embeddings=CONTEXT_LENGTH)
    clip = CLIPConfig(text_config=text, vision_config=vision, projection_dim=PROJECTION_DIM[kind])
    owl_text = dict(text, max_position_embeddings=16)  # OWL-ViT's text context
    owl = OwlViTConfig(text_config=owl_text, vision_config=vision, projection_dim=PROJECTION_DIM[kind])
    return clip, owl


@contextlib.contextmanager
def no_progress_bars():
    """transformers draws "Writing model shards" bars for every save: noise in the benchmark's output."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def save_random_models(model: str, image_size: int, folder: str | Path, seed: int = 0) -> dict[str, str]:
    """Save random-weight `CLIPModel` and `OwlViTForObjectDetection` folders; returns {"clip_dir", "owlvit_dir"}.

    The CLIP is saved at CLIP's usual 224 px (ovdet interpolates position embeddings up to
    `image_size`, as for a real CLIP); OwlViT is built at `image_size`, as OWL-ViT ships.
    """
    import torch
    from transformers import CLIPModel, OwlViTForObjectDetection

    folder = Path(folder)
    clip_cfg, owl_cfg = configs(model, image_size)
    clip_cfg.vision_config.image_size = 224 if model != "tiny" else 64
    torch.manual_seed(seed)
    out = {"clip_dir": folder / f"{model}_clip", "owlvit_dir": folder / f"{model}_owlvit"}
    with no_progress_bars():
        CLIPModel(clip_cfg).eval().save_pretrained(str(out["clip_dir"]))
        OwlViTForObjectDetection(owl_cfg).eval().save_pretrained(str(out["owlvit_dir"]))
    return {k: str(v) for k, v in out.items()}


def save_random_owlv2(folder: str | Path, image_size: int = OWLV2_SIZE, seed: int = 0) -> dict[str, str]:
    """A random-weight `Owlv2ForObjectDetection` (B/16 vision, CLIP text) with its processor, saved as
    transformers saves it; ovdet loads the very same folder. Returns {"owl_dir"}."""
    import torch
    from transformers import Owlv2Config, Owlv2ForObjectDetection, Owlv2ImageProcessor, Owlv2Processor

    from ovdet.text.tokenizer import clip_tokenizer

    vision = dict(VISION_SPECS["b16"], image_size=image_size)
    text = dict(TEXT_SPECS["standard"], vocab_size=49408, max_position_embeddings=16)
    config = Owlv2Config(text_config=text, vision_config=vision, projection_dim=PROJECTION_DIM["standard"])
    torch.manual_seed(seed)
    out = Path(folder) / "owlv2"
    with no_progress_bars():
        Owlv2ForObjectDetection(config).eval().save_pretrained(str(out))
    tokenizer = clip_tokenizer()  # its own copy
    tokenizer.model_max_length = 16  # OWL's text context
    Owlv2Processor(image_processor=Owlv2ImageProcessor(size={"height": image_size, "width": image_size}),
                   tokenizer=tokenizer).save_pretrained(str(out))
    return {"owl_dir": str(out)}
