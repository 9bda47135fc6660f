"""open_clip folders whose vision tower is a timm model: EVA-CLIP (`eva02_*_clip_*`) and MobileCLIP (`fastvit_mci*`).

The model stays an open_clip `CustomTextCLIP`, built from the folder's own `model_cfg` by open_clip, so the text
tower, its tokenizer and the pooled image embedding are open_clip's. Only the EVA trunk is rebuilt by timm with
`dynamic_img_size=True` (same weights): its position and rotary embeddings then follow the input grid, as timm
does. Other timm towers, and settings whose dense view is not exact, are refused by name before weights are read.
"""

from __future__ import annotations

import copy
from dataclasses import fields
from fnmatch import fnmatch
from pathlib import Path

from safetensors.torch import load_file

from ovdet.errors import ModelNotAvailableError
from ovdet.preprocess import OPENAI_MEAN, OPENAI_STD
from ovdet.towers.library_path import library_path
from ovdet.towers.loaded_clip import LoadedCLIP
from ovdet.towers.open_clip_vit import BPE_VOCAB_SIZE, CONFIG_NAME, WEIGHTS_NAME, read_config

TIMM_FAMILIES = {"eva02_*_clip_*": "eva", "fastvit_mci*": "fastvit"}  # timm model name pattern -> family
FAMILY_POOL = {"eva": "token", "fastvit": "avg"}  # each family's own pooling: the dense view is exact for it
SUPPORTED_TIMM = "eva02_*_clip_* (EVA-CLIP) and fastvit_mci* (MobileCLIP / MobileCLIP2)"
_MODEL_KEYS = {"embed_dim", "vision_cfg", "text_cfg", "quick_gelu", "init_logit_scale", "init_logit_bias",
               "nonscalar_logit_scale", "custom_text"}
_TIMM_PROJ = (None, "", "linear")  # a per-token linear map commutes with the pooling; an MLP would not
_TEXT_REFUSED = {"hf_model_name": (None, ""), "hf_tokenizer_name": (None, ""), "tokenizer_mode": (None,),
                 "vocab_size": (BPE_VOCAB_SIZE,)}


def timm_family(model_cfg: dict) -> str | None:
    """"eva" or "fastvit" for a timm tower ovdet loads, None when the vision tower is not a timm model.

    Raises ModelNotAvailableError naming any other timm model.
    """
    name = (model_cfg.get("vision_cfg") or {}).get("timm_model_name")
    if not name:
        return None
    for pattern, family in TIMM_FAMILIES.items():
        if isinstance(name, str) and fnmatch(name, pattern):
            return family
    raise ModelNotAvailableError(
        f"model_cfg.vision_cfg.timm_model_name={name!r} has no transformers CLIP equivalent and is not a timm tower "
        f"ovdet maps; ovdet loads the timm towers {SUPPORTED_TIMM}"
    )


def check_timm_config(model_cfg: dict, family: str, source: str) -> None:
    """Refuse in one line, naming the field, what ovdet cannot map exactly for this family."""
    from open_clip.model import CLIPTextCfg, CLIPVisionCfg

    def refuse(field: str, value, why: str) -> None:
        raise ModelNotAvailableError(f"'{source}': model_cfg.{field}={value!r} {why}, so ovdet cannot load this "
                                     "open_clip model")

    for key in model_cfg:
        if key not in _MODEL_KEYS:
            refuse(key, model_cfg[key], "is not a CLIP setting ovdet knows")
    vision, text = dict(model_cfg.get("vision_cfg") or {}), dict(model_cfg.get("text_cfg") or {})
    for part, given, cfg_class in (("vision_cfg", vision, CLIPVisionCfg), ("text_cfg", text, CLIPTextCfg)):
        unknown = sorted(set(given) - {f.name for f in fields(cfg_class)})
        if unknown:
            refuse(f"{part}.{unknown[0]}", given[unknown[0]], "is not an open_clip setting")
    pool = FAMILY_POOL[family]
    if vision.get("timm_pool", "avg") != pool:
        refuse("vision_cfg.timm_pool", vision.get("timm_pool", "avg"), f"is not {family}'s own pooling ({pool!r})")
    if vision.get("timm_proj", "linear") not in _TIMM_PROJ:
        refuse("vision_cfg.timm_proj", vision.get("timm_proj"), "does not commute with the pooling")
    for key, allowed in _TEXT_REFUSED.items():
        if key in text and text[key] not in allowed:
            refuse(f"text_cfg.{key}", text[key], "asks for a text tower or tokenizer other than open_clip's BPE one")


def build_timm_clip(config: dict):
    """open_clip's `CustomTextCLIP` of a config (random weights; timm never downloads), EVA trunks dynamic-size.

    The returned model keeps its config in `.open_clip_config` (for `save_open_clip`), with `custom_text`.
    """
    from open_clip import CustomTextCLIP

    config = copy.deepcopy(config)
    model_cfg = config["model_cfg"]
    model_cfg["custom_text"] = True  # the weights are converted to the CustomTextCLIP layout on load
    model_cfg["vision_cfg"] = dict(model_cfg["vision_cfg"], timm_model_pretrained=False)
    model = CustomTextCLIP(**{k: v for k, v in model_cfg.items() if k != "custom_text"})
    if timm_family(model_cfg) == "eva":
        _make_dynamic_size(model.visual, model_cfg["vision_cfg"])
    model.open_clip_config = config  # a plain attribute: save_open_clip reads it
    return model


def _make_dynamic_size(visual, vision_cfg: dict) -> None:
    """Swap the EVA trunk for the same timm model built with `dynamic_img_size=True` (identical parameters): its
    absolute and rotary position embeddings are then resampled to each input's grid by timm itself."""
    import timm

    trunk = visual.trunk
    kwargs = {}  # what open_clip's TimmModel passes besides the head
    if vision_cfg.get("timm_drop_path") is not None:
        kwargs["drop_path_rate"] = vision_cfg["timm_drop_path"]
    if vision_cfg.get("patch_dropout", 0) > 0:
        kwargs["patch_drop_rate"] = vision_cfg["patch_dropout"]
    dynamic = timm.create_model(vision_cfg["timm_model_name"], pretrained=False, num_classes=trunk.num_classes,
                                global_pool=trunk.global_pool, dynamic_img_size=True, **kwargs)
    dynamic.load_state_dict(trunk.state_dict())
    visual.trunk = dynamic


def read_timm_clip(folder: Path, config: dict):
    """The folder's open_clip model with its weights (float32, eval mode), or a one-line refusal."""
    from open_clip.model import convert_to_custom_text_state_dict

    weights = folder / WEIGHTS_NAME
    try:
        with library_path(weights) as readable:  # safetensors opens UTF-8 paths only
            state = load_file(str(readable))
    except Exception as err:  # safetensors raises its own SafetensorError on a broken header
        raise ModelNotAvailableError(f"'{weights}' cannot be read ({type(err).__name__}); is it truncated?") from None
    model = build_timm_clip(config)
    state = convert_to_custom_text_state_dict(state)  # an open_clip.CLIP keeps its text modules at the top level
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)  # fp16/bf16 copied into fp32 parameters
    except RuntimeError as err:  # a shape that disagrees with the config
        raise ModelNotAvailableError(f"'{weights}' does not match {CONFIG_NAME}: {str(err).splitlines()[-1].strip()}") from None
    if missing or unexpected:
        raise ModelNotAvailableError(f"'{weights}' does not match {CONFIG_NAME}: missing {sorted(missing)[:8]}, "
                                     f"unexpected {sorted(unexpected)[:8]}")
    return model.eval()


def load_open_clip_timm(folder: Path, reference: str, trainable_layers: int = 0) -> LoadedCLIP:
    """An EVA-CLIP or MobileCLIP open_clip folder as ovdet's two towers (format "open_clip")."""
    from open_clip.tokenizer import SimpleTokenizer

    from ovdet.towers.text_open_clip import OpenCLIPTextTower
    from ovdet.towers.vision_eva import EvaVisionBackbone
    from ovdet.towers.vision_fastvit import FastViTVisionBackbone

    config = read_config(folder)
    model_cfg = config["model_cfg"]
    family = timm_family(model_cfg)
    check_timm_config(model_cfg, family, str(folder / CONFIG_NAME))  # before the weights are read
    model = read_timm_clip(folder, config)
    pre = config.get("preprocess_cfg") or {}
    mean, std = tuple(pre.get("mean", OPENAI_MEAN)), tuple(pre.get("std", OPENAI_STD))
    backbone_class = EvaVisionBackbone if family == "eva" else FastViTVisionBackbone
    backbone = backbone_class(model.visual, mean, std, trainable_layers=trainable_layers)
    text_cfg = model_cfg.get("text_cfg") or {}
    # open_clip.get_tokenizer's choice for a folder without hf_tokenizer_name: its BPE, with the config's cleaning.
    tokenizer = SimpleTokenizer(context_length=model.text.context_length, **(text_cfg.get("tokenizer_kwargs") or {}))
    text = OpenCLIPTextTower(model.text, tokenizer, identity=reference)
    head_init = None
    if getattr(model, "logit_bias", None) is not None:  # sigmoid-trained: its scale and bias fit the detection head
        scale = float(model.logit_scale.detach().exp().reshape(()))
        head_init = {"logit_scale": scale, "logit_shift": float(model.logit_bias.detach().reshape(())) / scale}
    return LoadedCLIP(backbone=backbone, text_tower=text, reference=reference, format="open_clip", model=model,
                      tokenizer=tokenizer, head_init=head_init)
