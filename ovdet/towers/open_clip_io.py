"""open_clip CLIPs in a folder: build from a small config, save, and load back offline.

The folder is the one `open_clip` itself reads (`open_clip.create_model("local-dir:DIR")`):
`open_clip_config.json` with `model_cfg` and `preprocess_cfg`, and the weights in
`open_clip_model.safetensors`. The text tower is open_clip's standalone `TextTransformer`
(`custom_text`), so it can be frozen without touching the vision tower. The tokenizer is
OpenAI's BPE that ships in the open_clip wheel: nothing is downloaded.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ovdet.errors import ModelNotAvailableError
from ovdet.preprocess import OPENAI_MEAN, OPENAI_STD
from ovdet.towers.library_path import library_path

CONFIG_NAME = "open_clip_config.json"
WEIGHTS_NAME = "open_clip_model.safetensors"
RESNET_STRIDE = 32  # ModifiedResNet: stem /4, then layer2..layer4 /2 each


def build_open_clip(
    embed_dim: int,
    vision_cfg: dict,
    text_cfg: dict,
    image_mean: tuple[float, float, float] = OPENAI_MEAN,
    image_std: tuple[float, float, float] = OPENAI_STD,
) -> nn.Module:
    """A randomly initialised open_clip CLIP with a ModifiedResNet vision tower (no pretrained weights).

    Args:
        embed_dim: E, the joint image-text space.
        vision_cfg: open_clip `CLIPVisionCfg` fields; `layers` is 4 stage depths (ResNet),
            e.g. {"layers": [1, 1, 1, 1], "width": 16, "image_size": 64, "head_width": 32}.
        text_cfg: open_clip `CLIPTextCfg` fields, e.g. {"context_length": 32, "width": 128,
            "heads": 2, "layers": 2}; the vocabulary is OpenAI's 49408 BPE tokens.
        image_mean / image_std: pixel normalisation, saved with the model.
    Returns:
        an `open_clip.CustomTextCLIP` carrying its config in `.open_clip_config` (for saving).
    """
    vision_cfg, text_cfg = dict(vision_cfg), dict(text_cfg)
    layers = vision_cfg.get("layers")
    if not isinstance(layers, (list, tuple)) or len(layers) != 4:
        raise ValueError(
            f"vision_cfg.layers must be 4 ResNet stage depths such as [1, 1, 1, 1], got {layers!r}; "
            "ViT towers load through transformers (a save_pretrained folder)"
        )
    size = vision_cfg.get("image_size", 224)
    if not isinstance(size, int) or size % RESNET_STRIDE:
        raise ValueError(f"vision_cfg.image_size must be an integer multiple of {RESNET_STRIDE}, got {size!r}")
    vision_cfg["layers"] = [int(n) for n in layers]
    text_cfg.setdefault("vocab_size", 49408)
    config = {
        "model_cfg": {"embed_dim": int(embed_dim), "vision_cfg": vision_cfg, "text_cfg": text_cfg, "custom_text": True},
        "preprocess_cfg": {"size": size, "mean": list(image_mean), "std": list(image_std)},
    }
    return _from_config(config)


def _from_config(config: dict) -> nn.Module:
    from open_clip import CustomTextCLIP

    cfg = copy.deepcopy(config["model_cfg"])
    cfg.pop("custom_text", None)
    vision_cfg = dict(cfg["vision_cfg"], layers=tuple(cfg["vision_cfg"]["layers"]))
    model = CustomTextCLIP(cfg["embed_dim"], vision_cfg, cfg["text_cfg"])
    model.open_clip_config = copy.deepcopy(config)  # a plain attribute: save_open_clip reads it
    return model


def save_open_clip(model: nn.Module, folder: str | Path, dtype: torch.dtype = torch.float32) -> Path:
    """Write `open_clip_config.json` and `open_clip_model.safetensors` into `folder`.

    Floating-point weights are stored in `dtype` (fp16 halves a shipped model; loading casts back).
    """
    config = getattr(model, "open_clip_config", None)
    if config is None:
        raise ValueError("this model has no .open_clip_config; build it with build_open_clip or load_open_clip")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {
        k: (v.detach().to(dtype) if v.is_floating_point() else v.detach()).contiguous().cpu()
        for k, v in model.state_dict().items()
    }
    save_file(state, str(folder / WEIGHTS_NAME))
    (folder / CONFIG_NAME).write_text(json.dumps(config, indent=2))
    return folder


def read_open_clip(folder: str | Path, light: bool = False) -> nn.Module:
    """The whole open_clip model of a saved folder, in eval mode (for pretraining evaluation). `light`: ovdet's
    own modules where they cover the config (`open_clip_resnet`), so that open_clip is not imported."""
    folder = Path(folder)
    config_file, weights = folder / CONFIG_NAME, folder / WEIGHTS_NAME
    if not config_file.is_file() or not weights.is_file():
        raise ModelNotAvailableError(
            f"'{folder}' is not an open_clip folder: it needs {CONFIG_NAME} and {WEIGHTS_NAME} (see save_open_clip)"
        )
    config = json.loads(config_file.read_text())
    if "model_cfg" not in config:
        raise ModelNotAvailableError(f"'{config_file}' has no model_cfg section; was it written by save_open_clip?")
    model = None
    if light:
        from ovdet.towers.open_clip_resnet import light_model

        model = light_model(config)
    model = model if model is not None else _from_config(config)
    with library_path(weights) as readable:  # safetensors opens UTF-8 paths only
        state = load_file(str(readable))
    if next(model.parameters()).is_meta:  # ovdet's modules, built without weights: the file's tensors become them
        state = {k: _aligned(v.float() if v.is_floating_point() else v) for k, v in state.items()}  # fp16 -> fp32
        missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    else:
        missing, unexpected = model.load_state_dict(state, strict=False)  # copies fp16/bf16 weights into fp32
    if missing or unexpected:
        raise ModelNotAvailableError(f"'{weights}' does not match its config: missing {missing}, unexpected {unexpected}")
    return model.eval()


def _aligned(tensor: torch.Tensor) -> torch.Tensor:
    """`tensor` in memory aligned as torch allocates it (64 bytes): safetensors' tensors may start anywhere, and
    oneDNN then takes another kernel path whose sums round differently (1e-8), so a weight is copied only then."""
    return tensor if tensor.data_ptr() % 64 == 0 else tensor.clone()


def open_clip_tokenizer(context_length: int):
    """OpenAI's BPE tokenizer from the open_clip wheel: texts -> LongTensor [N, context_length]. A shallow copy of
    the process's one instance: the tables are shared, only the context differs."""
    import copy

    from ovdet.text.tokenizer import simple_tokenizer

    tokenizer = copy.copy(simple_tokenizer())
    tokenizer.context_length = context_length
    return tokenizer


def load_open_clip(folder: str | Path, trainable_layers: int = 0, reference: str | None = None):
    """Load a saved open_clip folder as the detector's two towers (a `LoadedCLIP`), offline, in float32.

    The vision tower comes back frozen except its last `trainable_layers` ResNet stages; `reference`
    (default: the folder) is what the user named.
    """
    from ovdet.towers.loaded_clip import LoadedCLIP
    from ovdet.towers.vision_resnet import CLIPResNetBackbone
    from ovdet.towers.text_open_clip import OpenCLIPTextTower

    folder = Path(folder)
    model = read_open_clip(folder, light=True)
    pre = model.open_clip_config.get("preprocess_cfg", {})
    mean, std = tuple(pre.get("mean", OPENAI_MEAN)), tuple(pre.get("std", OPENAI_STD))
    tokenizer = open_clip_tokenizer(model.text.context_length)
    backbone = CLIPResNetBackbone(model.visual, mean, std, trainable_layers=trainable_layers)
    reference = reference or str(folder)
    text = OpenCLIPTextTower(model.text, tokenizer, identity=reference)
    return LoadedCLIP(
        backbone=backbone, text_tower=text, reference=reference, format="open_clip", model=model, tokenizer=tokenizer
    )

