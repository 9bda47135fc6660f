"""A transformers ALIGN folder (`AlignModel.save_pretrained`, model_type "align") as ovdet's two towers."""

from __future__ import annotations

from pathlib import Path

from ovdet.errors import ModelNotAvailableError
from ovdet.towers.loaded_clip import LoadedCLIP

ALIGN_MEAN = ALIGN_STD = (0.5, 0.5, 0.5)  # ALIGN's processor: 0..255 / 127.5 - 1


def load_align_folder(folder: Path, reference: str, trainable_layers: int) -> LoadedCLIP:
    """ALIGN's EfficientNet map and BERT text tower, its WordPiece tokenizer, and its temperature as head_init.

    ALIGN scores `cos / temperature`: the head starts at logit_scale = 1 / temperature, shift 0.
    Configs whose image embedding is not the map's mean, or whose text projection leaves the map's space,
    are refused by field name.
    """
    from transformers import AlignModel

    from ovdet.towers.image_processor_config import efficientnet_normalisation
    from ovdet.towers.loader import from_pretrained_checked
    from ovdet.towers.text_align import AlignTextTower
    from ovdet.towers.tokenizer_files import auto_tokenizer
    from ovdet.towers.vision_align import AlignVisionBackbone

    model = from_pretrained_checked(AlignModel, folder, reference, attention="eager")  # no SDPA path in ALIGN
    _refuse_unmapped(model.config, reference)
    tokenizer = auto_tokenizer(folder, reference)
    vocab = model.config.text_config.vocab_size
    if len(tokenizer) > vocab:
        raise ModelNotAvailableError(f"the tokenizer in '{folder}' has {len(tokenizer)} tokens but its text tower only "
                                     f"{vocab}: they do not belong together; copy the model's own tokenizer files into it")
    mean, std = efficientnet_normalisation(folder, ALIGN_MEAN, ALIGN_STD)
    backbone = AlignVisionBackbone(model.vision_model, mean, std, trainable_layers=trainable_layers)
    text = AlignTextTower(model.text_model, model.text_projection, tokenizer, identity=reference)
    head_init = {"logit_scale": 1.0 / float(model.temperature.detach()), "logit_shift": 0.0}
    return LoadedCLIP(backbone=backbone, text_tower=text, reference=reference, format="align", model=model,
                      tokenizer=tokenizer, head_init=head_init)


def _refuse_unmapped(config, reference: str) -> None:
    """One line naming the config field ovdet has no equivalent for."""
    vision = config.vision_config
    if vision.pooling_type != "mean":
        raise ModelNotAvailableError(f"'{reference}' pools its image embedding with pooling_type={vision.pooling_type!r}; "
                                     "ovdet maps ALIGN's mean pooling only (its map cells are then in the joint space)")
    from transformers.models.align.modeling_align import round_filters

    width = round_filters(vision, vision.out_channels[-1])
    if config.projection_dim != width:
        raise ModelNotAvailableError(f"'{reference}' has projection_dim={config.projection_dim} but its image embedding "
                                     f"has {width} channels; ALIGN's text projection must land in the map's space")
