"""An open_clip folder (`open_clip_config.json` + `open_clip_model.safetensors`) as ovdet's two towers.

Dispatch by the tower its config describes: a ResNet (`vision_cfg.layers` a list of 4) stays an open_clip
model; a timm tower ovdet maps (EVA-CLIP `eva02_*_clip_*`, MobileCLIP `fastvit_mci*`) stays an open_clip model
too (`open_clip_timm`); any other timm tower is refused naming it; a plain ViT becomes a transformers CLIP.
"""

from __future__ import annotations

from pathlib import Path

from ovdet.errors import ModelNotAvailableError
from ovdet.towers.loaded_clip import LoadedCLIP


def load_open_clip_folder(folder: Path, reference: str, trainable_layers: int) -> LoadedCLIP:
    """The towers of an open_clip folder, refused in one line when it has no safetensors weights."""
    from ovdet.towers.open_clip_timm import load_open_clip_timm, timm_family
    from ovdet.towers.open_clip_vit import CONFIG_NAME, WEIGHTS_NAME, load_open_clip_vit, read_config

    if not (folder / WEIGHTS_NAME).is_file():
        raise ModelNotAvailableError(f"open_clip folder '{folder}' has no {WEIGHTS_NAME} (ovdet loads safetensors only)")
    model_cfg = read_config(folder)["model_cfg"]
    try:
        family = timm_family(model_cfg)
    except ModelNotAvailableError as err:
        raise ModelNotAvailableError(f"'{folder / CONFIG_NAME}': {err}") from None
    if family is not None:
        return load_open_clip_timm(folder, reference, trainable_layers)
    layers = (model_cfg.get("vision_cfg") or {}).get("layers", 12)
    if isinstance(layers, (list, tuple)):
        from ovdet.towers.open_clip_io import load_open_clip

        return load_open_clip(folder, trainable_layers=trainable_layers, reference=reference)
    return load_open_clip_vit(folder, trainable_layers, reference=reference)
