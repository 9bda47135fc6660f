"""Load a CLIP-like model (hub id or local folder) into the two towers the detector uses: offline-safe, never silent.

A hub id is first resolved to its snapshot in the local cache (`hub_cache`), so every loader sees a
folder. Dispatch: an open_clip folder (`open_clip_config.json`) goes to the ResNet or the ViT
converter; a transformers folder goes by its config.json `model_type`. transformers
only logs the weights that do not fit an architecture, so every load asks for the loading
info and refuses any missing or unexpected key; weights are read from safetensors only.
"""

from __future__ import annotations

import json
from pathlib import Path

from ovdet.errors import ModelNotAvailableError
from ovdet.json_file import read_json_file
from ovdet.preprocess import OPENAI_MEAN, OPENAI_STD
from ovdet.towers.hub_cache import resolve_model
from ovdet.towers.image_processor_config import image_normalisation
from ovdet.towers.library_path import library_path
from ovdet.towers.loaded_clip import LoadedCLIP
from ovdet.towers.tokenizer_files import auto_tokenizer, clip_folder_tokenizer

OPEN_CLIP_CONFIG = "open_clip_config.json"
SIGLIP_MEAN = SIGLIP_STD = (0.5, 0.5, 0.5)
SUPPORTED = ("transformers folders of model_type clip, owlvit, owlv2, siglip, siglip2, align or metaclip_2, and "
             "open_clip folders (open_clip_config.json)")
_SHOWN_KEYS = 8


def detect_format(name_or_path: str | Path) -> str:
    """"open_clip" for a folder with `open_clip_config.json`, else "hf" (transformers)."""
    path = Path(name_or_path)
    if path.is_dir() and (path / OPEN_CLIP_CONFIG).is_file():
        return "open_clip"
    return "hf"


def load_clip(name_or_path: str | Path, trainable_layers: int = 0) -> LoadedCLIP:
    """Load a CLIP-like model by hub id (its cached snapshot) or folder; towers come back frozen except the
    last `trainable_layers`.

    Raises:
        ModelNotAvailableError: one line: the path does not exist, the id is not cached and no hub
            can be reached, the model type is not one ovdet loads, or the weights do not fit it.
    """
    source = resolve_model(name_or_path)
    return load_clip_folder(source.folder, source.reference, trainable_layers)


def load_clip_folder(folder: Path, reference: str, trainable_layers: int = 0) -> LoadedCLIP:
    """The towers of a local model folder; `reference` (what the user named) identifies them."""
    if detect_format(folder) == "open_clip":
        from ovdet.towers.open_clip_folder import load_open_clip_folder

        return load_open_clip_folder(folder, reference, trainable_layers)
    model_type = _local_model_type(folder)
    if model_type == "clip":
        return _load_hf_clip(folder, reference, trainable_layers)
    if model_type == "siglip":
        return _load_siglip(folder, reference, trainable_layers)
    if model_type in ("owlvit", "owlv2"):
        return load_owl_towers(folder, trainable_layers, reference)
    if model_type == "align":
        from ovdet.towers.align_folder import load_align_folder

        return load_align_folder(folder, reference, trainable_layers)
    if model_type == "metaclip_2":
        return _load_metaclip_2(folder, reference, trainable_layers)
    if model_type == "siglip2":
        from ovdet.towers.siglip2_folder import load_siglip2_folder

        return load_siglip2_folder(folder, reference, trainable_layers)
    hint = "; it is an ovdet detector: load it with Detector.from_pretrained" if model_type == "ovdet" else ""
    raise ModelNotAvailableError(
        f"'{reference}' is a model of type {model_type!r}, which ovdet cannot load{hint}; supported: {SUPPORTED}"
    )


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


def json_file(folder: str | Path, filename: str) -> dict | None:
    """A JSON file of a local model folder (None when it has none)."""
    file = Path(folder) / filename
    if not file.is_file():
        return None
    return read_json_file(file, error=ModelNotAvailableError)


def from_pretrained_checked(model_class, folder: str | Path, name: str | None = None, attention: str = "sdpa"):
    """`model_class.from_pretrained(folder)` (safetensors, float32) that refuses any key mismatch.

    transformers would log a table of missing, unexpected and re-initialised keys and go on;
    its log is hushed and the mismatch is one `ModelNotAvailableError` that names the keys.
    Weights saved in fp16 / bf16 are loaded as float32 (transformers 5 would keep the saved dtype):
    precision is a runtime choice (`Detector.set_precision`), not a property of the file.
    `attention` is transformers' `attn_implementation` ("eager" for a model with no SDPA path: ALIGN's BERT).
    """
    import torch
    from transformers.utils import logging as hf_logging

    name = name or str(folder)
    hf_logging.disable_progress_bar()  # one line per model load is noise in a CLI
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        # SDPA: PyTorch's fused attention kernels (flash / memory-efficient on GPU, fused on CPU).
        # ignore_mismatched_sizes: report a wrong shape as a key (refused below), not as an opaque error.
        with library_path(folder) as path:
            model, info = model_class.from_pretrained(
                str(path), attn_implementation=attention, output_loading_info=True, use_safetensors=True,
                local_files_only=True, ignore_mismatched_sizes=True, dtype=torch.float32,
            )
    except (OSError, ValueError, RuntimeError) as err:
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


def _load_hf_clip(folder: Path, reference: str, trainable_layers: int) -> LoadedCLIP:
    from transformers import CLIPModel

    model = from_pretrained_checked(CLIPModel, folder, reference)
    tokenizer = clip_folder_tokenizer(folder, model.config.text_config.vocab_size)
    mean, std = image_normalisation(folder, OPENAI_MEAN, OPENAI_STD)
    return LoadedCLIP.from_clip_model(model, tokenizer, mean, std, reference, trainable_layers)


def _load_metaclip_2(folder: Path, reference: str, trainable_layers: int) -> LoadedCLIP:
    """A MetaCLIP 2 (`MetaClip2Model`): a CLIP ViT and a CLIP text tower pooled at the first EOS, with its own
    (XLM-R) tokenizer; the towers are CLIP's, so they are wrapped as CLIP's are."""
    from transformers import MetaClip2Model

    from ovdet.towers.text_hf import HFCLIPTextTower
    from ovdet.towers.vision_vit import CLIPVisionBackbone

    model = from_pretrained_checked(MetaClip2Model, folder, reference)
    tokenizer = auto_tokenizer(folder, reference)
    _refuse_foreign_tokenizer(tokenizer, model.config.text_config, folder)
    mean, std = image_normalisation(folder, OPENAI_MEAN, OPENAI_STD)
    backbone = CLIPVisionBackbone(model.vision_model, mean, std, trainable_layers=trainable_layers)
    text = HFCLIPTextTower(model.text_model, model.text_projection, tokenizer, identity=reference)
    return LoadedCLIP(backbone=backbone, text_tower=text, reference=reference, format="metaclip_2", model=model,
                      tokenizer=tokenizer)


def _refuse_foreign_tokenizer(tokenizer, text_config, folder: Path) -> None:
    """A tokenizer whose ids overflow the text tower, or whose EOS is not the one the tower pools at, is not its own."""
    if len(tokenizer) > text_config.vocab_size:
        raise ModelNotAvailableError(f"the tokenizer in '{folder}' has {len(tokenizer)} tokens but its text tower only "
                                     f"{text_config.vocab_size}: copy the model's own tokenizer files into the folder")
    if tokenizer.eos_token_id != text_config.eos_token_id:
        raise ModelNotAvailableError(f"the tokenizer in '{folder}' ends texts with token {tokenizer.eos_token_id} but the "
                                     f"text tower pools at eos_token_id={text_config.eos_token_id}: copy the model's own "
                                     "tokenizer files into the folder")


def _load_siglip(folder: Path, reference: str, trainable_layers: int) -> LoadedCLIP:
    """A SigLIP (or fixed-resolution SigLIP2): towers, its own tokenizer, and its sigmoid scale/bias as head_init."""
    from transformers import SiglipModel

    from ovdet.towers.text_siglip import SiglipTextTower
    from ovdet.towers.vision_siglip import SiglipVisionBackbone

    model = from_pretrained_checked(SiglipModel, folder, reference)
    tokenizer = auto_tokenizer(folder, reference)
    mean, std = image_normalisation(folder, SIGLIP_MEAN, SIGLIP_STD)
    backbone = SiglipVisionBackbone(model.vision_model, mean, std, trainable_layers=trainable_layers)
    text = SiglipTextTower(model.text_model, tokenizer, identity=reference)
    scale = float(model.logit_scale.detach().exp())  # logits = exp(t) * cos + b = (cos + b / exp(t)) * exp(t)
    head_init = {"logit_scale": scale, "logit_shift": float(model.logit_bias.detach()) / scale}
    return LoadedCLIP(backbone=backbone, text_tower=text, reference=reference, format="siglip", model=model,
                      tokenizer=tokenizer, head_init=head_init)


def config_model_type(folder: str | Path) -> str | None:
    """`model_type` of a transformers folder's config.json (None when it has none)."""
    data = json_file(folder, "config.json") or {}
    return data.get("model_type") if isinstance(data, dict) else None


def load_owl_towers(path: str | Path, trainable_layers: int = 0, reference: str | None = None) -> LoadedCLIP:
    """A towers-only OwlViTModel / Owlv2Model folder (what an ovdet folder made from OWL keeps in `clip/`)."""
    import transformers

    path = Path(path)
    reference = reference or str(path)
    kind = config_model_type(path)
    base_cls = getattr(transformers, "OwlViTModel" if kind == "owlvit" else "Owlv2Model")
    return owl_towers(from_pretrained_checked(base_cls, path, reference), path, kind, trainable_layers, reference)


def owl_towers(base, path: Path, kind: str, trainable_layers: int, reference: str) -> LoadedCLIP:
    """An OwlViTModel / Owlv2Model (the CLIP inside an OWL detector) as ovdet's two towers."""
    from ovdet.towers.text_hf import HFCLIPTextTower
    from ovdet.towers.vision_vit import CLIPVisionBackbone

    tokenizer = clip_folder_tokenizer(path, base.config.text_config.vocab_size)
    mean, std = image_normalisation(path, OPENAI_MEAN, OPENAI_STD)
    backbone = CLIPVisionBackbone(base.vision_model, mean, std, trainable_layers=trainable_layers)
    text = HFCLIPTextTower(base.text_model, base.text_projection, tokenizer, identity=reference)
    return LoadedCLIP(backbone=backbone, text_tower=text, reference=reference, format=kind, model=base, tokenizer=tokenizer)
