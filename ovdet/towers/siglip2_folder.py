"""A transformers SigLIP2 NaFlex folder (`Siglip2Model.save_pretrained`, model_type "siglip2") as ovdet's two towers.

(Fixed-resolution SigLIP2 checkpoints are model_type "siglip" and load as SigLIP.)
"""

from __future__ import annotations

import math
from pathlib import Path

from ovdet.errors import ModelNotAvailableError
from ovdet.towers.loaded_clip import LoadedCLIP

SIGLIP2_MEAN = SIGLIP2_STD = (0.5, 0.5, 0.5)


def load_siglip2_folder(folder: Path, reference: str, trainable_layers: int) -> LoadedCLIP:
    """The NaFlex vision tower, SigLIP's text tower on SigLIP2's text model, its own (Gemma) tokenizer, and its
    sigmoid scale/bias as head_init (logits = exp(t) * cos + b, as SigLIP)."""
    from transformers import Siglip2Model

    from ovdet.towers.image_processor_config import image_normalisation
    from ovdet.towers.loader import from_pretrained_checked
    from ovdet.towers.text_siglip import SiglipTextTower
    from ovdet.towers.tokenizer_files import auto_tokenizer
    from ovdet.towers.vision_siglip2_naflex import Siglip2NaflexBackbone

    model = from_pretrained_checked(Siglip2Model, folder, reference)
    patches = int(model.config.vision_config.num_patches)
    if math.isqrt(patches) ** 2 != patches:
        raise ModelNotAvailableError(f"'{reference}' has num_patches={patches}, not a square grid of position embeddings; "
                                     "SigLIP2 NaFlex resizes a square grid")
    tokenizer = auto_tokenizer(folder, reference)
    vocab = model.config.text_config.vocab_size
    if len(tokenizer) > vocab:
        raise ModelNotAvailableError(f"the tokenizer in '{folder}' has {len(tokenizer)} tokens but its text tower only "
                                     f"{vocab}: they do not belong together; copy the model's own tokenizer files into it")
    mean, std = image_normalisation(folder, SIGLIP2_MEAN, SIGLIP2_STD)
    backbone = Siglip2NaflexBackbone(model.vision_model, mean, std, trainable_layers=trainable_layers)
    text = SiglipTextTower(model.text_model, tokenizer, identity=reference)
    scale = float(model.logit_scale.detach().exp())  # logits = exp(t) * cos + b = (cos + b / exp(t)) * exp(t)
    head_init = {"logit_scale": scale, "logit_shift": float(model.logit_bias.detach()) / scale}
    return LoadedCLIP(backbone=backbone, text_tower=text, reference=reference, format="siglip2", model=model,
                      tokenizer=tokenizer, head_init=head_init)
