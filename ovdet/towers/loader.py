"""Load a CLIP-like model (hub id or local folder) into the two towers the detector uses: offline-safe, never silent.

Dispatch: an open_clip folder (`open_clip_config.json`) goes to the ResNet or the ViT
converter; a transformers folder or hub id goes by its config.json `model_type`. transformers
only logs the weights that do not fit an architecture, so every load asks for the loading
info and refuses any missing or unexpected key; weights are read from safetensors only.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from ovdet.errors import ModelNotAvailableError
from ovdet.json_file import read_json_file
from ovdet.preprocess import OPENAI_MEAN, OPENAI_STD
from ovdet.towers.loaded_clip import LoadedCLIP

OPEN_CLIP_CONFIG = "open_clip_config.json"
SIGLIP_MEAN = SIGLIP_STD = (0.5, 0.5, 0.5)
SUPPORTED = "transformers folders of model_type clip, owlvit, owlv2 or siglip, and open_clip folders (open_clip_config.json)"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")  # org/name
_SHOWN_KEYS = 8


def allow_download() -> bool:
    """Hub downloads happen only when the user asks for them with OVDET_ALLOW_DOWNLOAD=1."""
    return os.environ.get("OVDET_ALLOW_DOWNLOAD") == "1"


def detect_format(name_or_path: str) -> str:
    """"open_clip" for a folder with `open_clip_config.json`, else "hf" (transformers)."""
    path = Path(name_or_path)
    if path.is_dir() and (path / OPEN_CLIP_CONFIG).is_file():
        return "open_clip"
    return "hf"


def load_clip(name_or_path: str | Path, trainable_layers: int = 0) -> LoadedCLIP:
    """Load a CLIP-like model by hub id or folder; towers come back frozen except the last `trainable_layers`.

    Raises:
        ModelNotAvailableError: one line: the path does not exist, the id is not cached and no hub
            can be reached, the model type is not one ovdet loads, or the weights do not fit it.
    """
    name = str(name_or_path)
    path = Path(name).expanduser()
    name = str(path) if name.startswith("~") else name  # the reference names the weights: keep it as given
    if detect_format(str(path)) == "open_clip":
        return _load_open_clip(path, trainable_layers)
    if path.exists():
        model_type = _local_model_type(path)
    elif _HUB_ID.match(name):
        model_type = _hub_model_type(name)
    else:
        raise ModelNotAvailableError(f"model '{name}' does not exist: it is no folder here and no hub id (org/name)")
    if model_type == "clip":
        return _load_hf_clip(name, trainable_layers)
    if model_type == "siglip":
        return _load_siglip(name, trainable_layers)
    if model_type in ("owlvit", "owlv2"):
        return load_owl_towers(name, trainable_layers)
    hint = "; it is an ovdet detector: load it with Detector.from_pretrained" if model_type == "ovdet" else ""
    raise ModelNotAvailableError(
        f"'{name}' is a model of type {model_type!r}, which ovdet cannot load{hint}; supported: {SUPPORTED}"
    )


def _load_open_clip(folder: Path, trainable_layers: int) -> LoadedCLIP:
    """ResNet towers (`vision_cfg.layers` a list of 4) stay open_clip models; ViTs become transformers CLIPs."""
    from ovdet.towers.open_clip_vit import WEIGHTS_NAME, load_open_clip_vit, read_config

    if not (folder / WEIGHTS_NAME).is_file():
        raise ModelNotAvailableError(f"open_clip folder '{folder}' has no {WEIGHTS_NAME} (ovdet loads safetensors only)")
    layers = (read_config(folder)["model_cfg"].get("vision_cfg") or {}).get("layers", 12)
    if isinstance(layers, (list, tuple)):
        from ovdet.towers.open_clip_io import load_open_clip

        return load_open_clip(folder, trainable_layers=trainable_layers)
    return load_open_clip_vit(folder, trainable_layers)


def _local_model_type(path: Path) -> str:
    """The `model_type` of a local transformers folder, checked before any weights are read."""
    config = path / "config.json"
    if not path.is_dir():
        raise ModelNotAvailableError(f"'{path}' is a file; pass a model folder (with config.json) or a hub id")
    if not config.is_file():
        raise ModelNotAvailableError(
            f"model folder '{path}' has no config.json; pass an ovdet model folder, a CLIP folder saved with "
            "save_pretrained, an open_clip folder, or a hub id such as openai/clip-vit-base-patch32"
        )
    try:
        data = json.loads(config.read_text())
    except (OSError, ValueError) as err:
        raise ModelNotAvailableError(f"'{config}' is not readable JSON ({type(err).__name__}: {err})") from None
    model_type = data.get("model_type") if isinstance(data, dict) else None
    if not model_type:
        raise ModelNotAvailableError(f"'{config}' names no model_type; supported: {SUPPORTED}")
    if not any(path.glob("*.safetensors")):
        others = sorted(p.name for p in path.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".ckpt"))
        raise ModelNotAvailableError(
            f"model folder '{path}' has no .safetensors weights{f' (only {others})' if others else ''}; ovdet loads "
            "safetensors only, since a pickle can run code: re-save a model you trust with save_pretrained"
        )
    return model_type


def _offline(name: str, err: Exception | None = None) -> ModelNotAvailableError:
    why = f"  [{err.__class__.__name__}]" if err is not None else ""
    allow = "" if allow_download() else " (or set OVDET_ALLOW_DOWNLOAD=1 where a hub can be reached)"
    return ModelNotAvailableError(
        f"model '{name}' is not available offline (no model hub can be reached and it is not in the local cache); "
        f"download it on a machine with access (e.g. `AutoModel.from_pretrained('{name}').save_pretrained('DIR')` "
        f"and the same for AutoTokenizer) and pass --model DIR{allow}{why}"
    )


def _hub_file(name: str, filename: str) -> Path | None:
    """A file of a hub id from the local cache (or the hub, if allowed), or None."""
    from transformers.utils import cached_file

    try:
        found = cached_file(name, filename, local_files_only=not allow_download(),
                            _raise_exceptions_for_missing_entries=False, _raise_exceptions_for_connection_errors=False)
    except OSError:
        return None
    return Path(found) if found else None


def _hub_model_type(name: str) -> str:
    config = _hub_file(name, "config.json")
    if config is None:
        raise _offline(name)
    return json.loads(config.read_text()).get("model_type", "")


def json_file(name: str | Path, filename: str) -> dict | None:
    path = Path(name)
    if path.is_dir():
        file = path / filename
    else:
        file = _hub_file(str(name), filename) if _HUB_ID.match(str(name)) else None
    if file is None or not file.is_file():
        return None
    return read_json_file(file, error=ModelNotAvailableError)


def from_pretrained_checked(model_class, name: str):
    """`model_class.from_pretrained(name)` (safetensors, offline unless allowed) that refuses any key mismatch.

    transformers would log a table of missing, unexpected and re-initialised keys and go on;
    its log is hushed and the mismatch is one `ModelNotAvailableError` that names the keys.
    """
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # one line per model load is noise in a CLI
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        # SDPA: PyTorch's fused attention kernels (flash / memory-efficient on GPU, fused on CPU).
        # ignore_mismatched_sizes: report a wrong shape as a key (refused below), not as an opaque error.
        model, info = model_class.from_pretrained(
            name, attn_implementation="sdpa", output_loading_info=True, use_safetensors=True,
            local_files_only=not allow_download(), ignore_mismatched_sizes=True,
        )
    except (OSError, ValueError, RuntimeError) as err:
        if not Path(name).exists():
            raise _offline(name, err) from None
        first = (str(err).strip().splitlines() or [""])[0][:300]
        raise ModelNotAvailableError(f"'{name}' cannot be loaded as a {model_class.__name__} ({type(err).__name__}: {first})") from None
    finally:
        hf_logging.set_verbosity(verbosity)
    problems = _key_problems(info)
    if problems:
        raise ModelNotAvailableError(
            f"the weights of '{name}' do not fit a {model_class.__name__}: {problems}; "
            "is it another architecture saved under this model_type?"
        )
    return model.eval()


def _key_problems(info: dict) -> str:
    """Missing, unexpected and wrongly shaped keys of a transformers loading info, in one line ('' if none)."""
    mismatched = [f"{k} (checkpoint {list(a)}, model {list(b)})" for k, a, b in info.get("mismatched_keys") or []]
    parts = [("missing keys", info.get("missing_keys")), ("unexpected keys", info.get("unexpected_keys")),
             ("wrong shapes", mismatched), ("errors", [str(e).splitlines()[0] for e in info.get("error_msgs") or []])]
    return "; ".join(f"{kind} {_shown(keys)}" for kind, keys in parts if keys)


def _shown(keys) -> str:
    keys = sorted(str(k) for k in keys)
    more = f" and {len(keys) - _SHOWN_KEYS} more" if len(keys) > _SHOWN_KEYS else ""
    return f"{keys[:_SHOWN_KEYS]}{more}"


def _load_hf_clip(name: str, trainable_layers: int) -> LoadedCLIP:
    from transformers import CLIPModel

    model = from_pretrained_checked(CLIPModel, name)
    mean, std = _normalisation_for(name, OPENAI_MEAN, OPENAI_STD)
    return LoadedCLIP.from_clip_model(model, _tokenizer_for(Path(name)), mean, std, name, trainable_layers)


def _load_siglip(name: str, trainable_layers: int) -> LoadedCLIP:
    """A SigLIP (or fixed-resolution SigLIP2): towers, its own tokenizer, and its sigmoid scale/bias as head_init."""
    from transformers import SiglipModel

    from ovdet.towers.text_siglip import SiglipTextTower
    from ovdet.towers.vision_siglip import SiglipVisionBackbone

    model = from_pretrained_checked(SiglipModel, name)
    tokenizer = _auto_tokenizer(name)
    mean, std = _normalisation_for(name, SIGLIP_MEAN, SIGLIP_STD)
    backbone = SiglipVisionBackbone(model.vision_model, mean, std, trainable_layers=trainable_layers)
    text = SiglipTextTower(model.text_model, tokenizer, identity=name)
    scale = float(model.logit_scale.detach().exp())  # logits = exp(t) * cos + b = (cos + b / exp(t)) * exp(t)
    head_init = {"logit_scale": scale, "logit_shift": float(model.logit_bias.detach()) / scale}
    return LoadedCLIP(backbone=backbone, text_tower=text, reference=name, format="siglip", model=model,
                      tokenizer=tokenizer, head_init=head_init)


def _auto_tokenizer(name: str):
    """The checkpoint's own tokenizer (SigLIP: sentencepiece, SigLIP2: Gemma), from the folder or cache."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(name, local_files_only=not allow_download())
    except (OSError, ValueError, ImportError) as err:
        first = (str(err).strip().splitlines() or [""])[0][:200]
        raise ModelNotAvailableError(f"'{name}' has no usable tokenizer ({type(err).__name__}: {first})") from None


def _tokenizer_for(path: Path):
    """The folder's own tokenizer when it has one, else OpenAI's BPE derived offline."""
    from ovdet.text.tokenizer import clip_tokenizer

    if path.is_dir() and ((path / "tokenizer.json").is_file() or (path / "vocab.json").is_file()):
        from transformers import CLIPTokenizer

        return CLIPTokenizer.from_pretrained(str(path))
    return clip_tokenizer()


def _normalisation_for(name: str | Path, mean=OPENAI_MEAN, std=OPENAI_STD) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Pixel mean/std from the model's preprocessor config, else the family's defaults."""
    data = json_file(name, "preprocessor_config.json") or {}
    if "image_mean" in data and "image_std" in data:
        return tuple(data["image_mean"]), tuple(data["image_std"])
    return tuple(mean), tuple(std)


def config_model_type(name: str | Path) -> str | None:
    """`model_type` of a transformers folder's config.json (None when it has none)."""
    data = json_file(name, "config.json") or {}
    return data.get("model_type") if isinstance(data, dict) else None


def load_owl_towers(path: str | Path, trainable_layers: int = 0) -> LoadedCLIP:
    """A towers-only OwlViTModel / Owlv2Model folder (what an ovdet folder made from OWL keeps in `clip/`)."""
    import transformers

    path = Path(path)
    kind = config_model_type(path)
    base_cls = getattr(transformers, "OwlViTModel" if kind == "owlvit" else "Owlv2Model")
    return owl_towers(from_pretrained_checked(base_cls, str(path)), path, kind, trainable_layers, str(path))


def owl_towers(base, path: Path, kind: str, trainable_layers: int, reference: str) -> LoadedCLIP:
    """An OwlViTModel / Owlv2Model (the CLIP inside an OWL detector) as ovdet's two towers."""
    from ovdet.towers.text_hf import HFCLIPTextTower
    from ovdet.towers.vision_vit import CLIPVisionBackbone

    tokenizer = _tokenizer_for(path)
    mean, std = _normalisation_for(path)
    backbone = CLIPVisionBackbone(base.vision_model, mean, std, trainable_layers=trainable_layers)
    text = HFCLIPTextTower(base.text_model, base.text_projection, tokenizer, identity=reference)
    return LoadedCLIP(backbone=backbone, text_tower=text, reference=reference, format=kind, model=base, tokenizer=tokenizer)
