"""OpenCLIP ViT checkpoints (open_clip's hub folder) converted to a transformers `CLIPModel`.

An `open_clip.CLIP` ViT is the OpenAI CLIP architecture under other names, so once its weights
are renamed (q/k/v split out of `in_proj`, `proj` and `text_projection` transposed) it runs as a
transformers CLIP: the dense backbone, the freezing and the saving are then the ones every HF
CLIP has, and the converted model saves as a plain transformers CLIP folder. Configs that
change the computation in a way a transformers CLIP cannot express are refused by field name.
"""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

import torch
from safetensors.torch import load_file

from ovdet.errors import ModelNotAvailableError
from ovdet.preprocess import OPENAI_MEAN, OPENAI_STD
from ovdet.towers.library_path import library_path

CONFIG_NAME = "open_clip_config.json"
WEIGHTS_NAME = "open_clip_model.safetensors"
BPE_VOCAB_SIZE = 49408  # OpenAI's BPE: the only tokenizer this path offers
# transformers CLIP pools the text at argmax(input_ids) when eos_token_id == 2 (its legacy
# branch): exactly open_clip's `pool_type="argmax"`, whatever the tokenizer pads with.
ARGMAX_POOLING_EOS_ID = 2
_MODEL_KEYS = {"embed_dim", "vision_cfg", "text_cfg", "quick_gelu", "init_logit_scale", "init_logit_bias",
               "nonscalar_logit_scale", "custom_text"}
# Custom attention blocks (qk-norm, cosine attention, head scales, extra LayerNorms) have no HF CLIP equivalent.
_BLOCK_RULES = {"block_type": (None, "default"), "qk_norm": (False,), "scaled_cosine_attn": (False,),
                "scale_heads": (False,), "scale_attn_inner": (False,), "scale_attn": (False,), "scale_fc": (False,)}
# field -> the values a transformers CLIP can reproduce. `final_ln_after_pool` is accepted: the
# LayerNorm acts per token, so norm-then-pool equals pool-then-norm for a single pooled token.
_VISION_RULES = {"timm_model_name": (None, ""), "attentional_pool": (False,), "ls_init_value": (None,),
                 "no_ln_pre": (False,), "pos_embed_type": ("learnable",), "pool_type": ("tok",),
                 "act_kwargs": (None, {}), "norm_kwargs": (None, {}), **_BLOCK_RULES}
_TEXT_RULES = {"hf_model_name": (None, ""), "hf_tokenizer_name": (None, ""), "tokenizer_mode": (None,),
               "tokenizer_kwargs": (None, {}), "vocab_size": (BPE_VOCAB_SIZE,), "ls_init_value": (None,),
               "embed_cls": (False,), "no_causal_mask": (False,), "pool_type": ("argmax",), "proj_bias": (False,),
               "proj_type": ("linear",), "act_kwargs": (None, {}), "norm_kwargs": (None, {}), **_BLOCK_RULES}


def read_config(folder: Path) -> dict:
    """`open_clip_config.json` of a folder, as a dict with a `model_cfg` section."""
    file = folder / CONFIG_NAME
    try:
        config = json.loads(file.read_text())
    except (OSError, ValueError) as err:
        raise ModelNotAvailableError(f"'{file}' is not readable JSON ({type(err).__name__}: {err})") from None
    if not isinstance(config, dict) or not isinstance(config.get("model_cfg"), dict):
        raise ModelNotAvailableError(f"'{file}' has no model_cfg section, so it describes no open_clip model")
    return config


def check_supported(model_cfg: dict, source: str) -> tuple[dict, dict]:
    """Refuse (one line naming the field) what a transformers CLIP cannot reproduce.

    Returns the vision and text configs with open_clip's defaults filled in.
    """
    from open_clip.model import CLIPTextCfg, CLIPVisionCfg

    def refuse(field: str, value) -> None:
        raise ModelNotAvailableError(
            f"'{source}': model_cfg.{field}={value!r} has no transformers CLIP equivalent, so ovdet cannot load this "
            "open_clip model"
        )

    for key in model_cfg:
        if key not in _MODEL_KEYS:
            refuse(key, model_cfg[key])  # multimodal_cfg (CoCa) and anything newer
    done = []
    for part, cfg_class, rules in (("vision_cfg", CLIPVisionCfg, _VISION_RULES), ("text_cfg", CLIPTextCfg, _TEXT_RULES)):
        given = dict(model_cfg.get(part) or {})
        known = {f.name for f in fields(cfg_class)}
        for key, value in given.items():
            if key not in known or (key in rules and value not in rules[key]):
                refuse(f"{part}.{key}", value)
        done.append({f.name: getattr(cfg_class(**given), f.name) for f in fields(cfg_class)})
    vision, text = done
    for key in ("image_size", "patch_size"):
        if isinstance(vision[key], (list, tuple)) and len(set(vision[key])) != 1:
            refuse(f"vision_cfg.{key}", vision[key])  # a transformers CLIP is square
        vision[key] = vision[key][0] if isinstance(vision[key], (list, tuple)) else vision[key]
    if isinstance(vision["layers"], (list, tuple)):
        refuse("vision_cfg.layers", vision["layers"])  # ResNet towers load through open_clip_io
    return vision, text


def clip_config(model_cfg: dict, vision: dict, text: dict):
    """The transformers `CLIPConfig` equal to an open_clip ViT config."""
    from transformers import CLIPConfig

    act = "quick_gelu" if model_cfg.get("quick_gelu", False) else "gelu"  # open_clip: QuickGELU or exact nn.GELU
    return CLIPConfig(
        vision_config=dict(
            hidden_size=vision["width"], intermediate_size=int(vision["width"] * vision["mlp_ratio"]),
            num_hidden_layers=vision["layers"], num_attention_heads=vision["width"] // vision["head_width"],
            image_size=vision["image_size"], patch_size=vision["patch_size"], hidden_act=act, layer_norm_eps=1e-5,
        ),
        text_config=dict(
            vocab_size=text["vocab_size"], hidden_size=text["width"], intermediate_size=int(text["width"] * text["mlp_ratio"]),
            num_hidden_layers=text["layers"], num_attention_heads=text["heads"],
            max_position_embeddings=text["context_length"], hidden_act=act, layer_norm_eps=1e-5,
            eos_token_id=ARGMAX_POOLING_EOS_ID,
        ),
        projection_dim=model_cfg["embed_dim"],
    )


def _move(state: dict, out: dict, src: str, dst: str, transpose: bool = False) -> None:
    tensor = state.pop(src)
    out[dst] = tensor.t().contiguous() if transpose else tensor


def _convert_blocks(state: dict, out: dict, src: str, dst: str, layers: int) -> None:
    """open_clip residual blocks -> transformers CLIP encoder layers (q/k/v split out of in_proj)."""
    for i in range(layers):
        s, d = f"{src}.resblocks.{i}", f"{dst}.layers.{i}"
        for name in ("weight", "bias"):
            q, k, v = state.pop(f"{s}.attn.in_proj_{name}").chunk(3, dim=0)  # [3W, ...] -> 3 x [W, ...]
            out.update({f"{d}.self_attn.q_proj.{name}": q, f"{d}.self_attn.k_proj.{name}": k,
                        f"{d}.self_attn.v_proj.{name}": v})
            for a, b in (("attn.out_proj", "self_attn.out_proj"), ("ln_1", "layer_norm1"), ("ln_2", "layer_norm2"),
                         ("mlp.c_fc", "mlp.fc1"), ("mlp.c_proj", "mlp.fc2")):
                _move(state, out, f"{s}.{a}.{name}", f"{d}.{b}.{name}")


def convert_state_dict(state: dict, vision_layers: int, text_layers: int) -> tuple[dict, dict]:
    """open_clip CLIP weights -> transformers CLIPModel weights.

    Returns (weights, leftovers): leftovers are the open_clip tensors with no place in a CLIPModel,
    except `logit_bias`, which the caller reads. A missing key raises KeyError.
    """
    state = {k.removeprefix("text."): v for k, v in state.items()}  # CustomTextCLIP keeps its text tower under text.
    state.pop("attn_mask", None)  # the causal mask is rebuilt, never loaded
    out: dict[str, torch.Tensor] = {}
    v, t = "vision_model", "text_model"
    for src, dst in (("visual.class_embedding", f"{v}.embeddings.class_embedding"),
                     ("visual.positional_embedding", f"{v}.embeddings.position_embedding.weight"),
                     ("visual.conv1.weight", f"{v}.embeddings.patch_embedding.weight"),
                     ("token_embedding.weight", f"{t}.embeddings.token_embedding.weight"),
                     ("positional_embedding", f"{t}.embeddings.position_embedding.weight")):
        _move(state, out, src, dst)
    for name in ("weight", "bias"):
        _move(state, out, f"visual.ln_pre.{name}", f"{v}.pre_layrnorm.{name}")
        _move(state, out, f"visual.ln_post.{name}", f"{v}.post_layernorm.{name}")
        _move(state, out, f"ln_final.{name}", f"{t}.final_layer_norm.{name}")
    _convert_blocks(state, out, "visual.transformer", f"{v}.encoder", vision_layers)
    _convert_blocks(state, out, "transformer", f"{t}.encoder", text_layers)
    _move(state, out, "visual.proj", "visual_projection.weight", transpose=True)  # x @ [W, E] == Linear([E, W])
    _move(state, out, "text_projection", "text_projection.weight", transpose=True)
    out["logit_scale"] = state.pop("logit_scale").reshape(())  # nonscalar_logit_scale stores [1]
    return out, state


def convert_open_clip_vit(folder: str | Path):
    """Read an open_clip ViT folder as a transformers `CLIPModel` (eval mode).

    Returns (model, image_mean, image_std, logit_bias or None).
    """
    folder = Path(folder)
    config = read_config(folder)
    model_cfg = config["model_cfg"]
    vision, text = check_supported(model_cfg, str(folder / CONFIG_NAME))
    weights = folder / WEIGHTS_NAME
    if not weights.is_file():
        raise ModelNotAvailableError(f"open_clip folder '{folder}' has no {WEIGHTS_NAME} (ovdet loads safetensors only)")
    from transformers import CLIPModel

    try:
        with library_path(weights) as readable:  # safetensors opens UTF-8 paths only
            state = load_file(str(readable))
    except Exception as err:  # safetensors raises its own SafetensorError on a broken header
        raise ModelNotAvailableError(f"'{weights}' cannot be read ({type(err).__name__}); is it truncated?") from None
    try:
        state, leftovers = convert_state_dict(state, vision["layers"], text["layers"])
    except KeyError as err:
        raise ModelNotAvailableError(f"'{weights}' does not match {CONFIG_NAME}: missing tensor {err}") from None
    logit_bias = leftovers.pop("logit_bias", None)
    model = CLIPModel(clip_config(model_cfg, vision, text))
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as err:  # a shape that disagrees with the config
        raise ModelNotAvailableError(f"'{weights}' does not match {CONFIG_NAME}: {str(err).splitlines()[-1].strip()}") from None
    unexpected = sorted(unexpected) + sorted(leftovers)
    if missing or unexpected:
        raise ModelNotAvailableError(f"'{weights}' does not match {CONFIG_NAME}: missing {sorted(missing)}, unexpected {unexpected}")
    pre = config.get("preprocess_cfg") or {}
    mean, std = tuple(pre.get("mean", OPENAI_MEAN)), tuple(pre.get("std", OPENAI_STD))
    return model.eval(), mean, std, (None if logit_bias is None else float(logit_bias.reshape(())))


def load_open_clip_vit(folder: str | Path, trainable_layers: int = 0, reference: str | None = None):
    """An open_clip ViT folder as the detector's towers: a `LoadedCLIP` of format "hf" with OpenAI's BPE, in
    float32 (`load_state_dict` copies fp16/bf16 weights into the fp32 parameters)."""
    from ovdet.text.tokenizer import clip_tokenizer
    from ovdet.towers.loaded_clip import LoadedCLIP

    model, mean, std, logit_bias = convert_open_clip_vit(folder)
    head_init = None
    if logit_bias is not None:  # trained with the sigmoid loss: its scale and bias fit the detection head
        scale = float(model.logit_scale.detach().exp())
        head_init = {"logit_scale": scale, "logit_shift": logit_bias / scale}
    return LoadedCLIP.from_clip_model(model, clip_tokenizer(), mean, std, reference or str(folder), trainable_layers,
                                      head_init=head_init)
