"""The Detector composes backbone -> head -> text scoring; postprocess stays outside the model."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from ovdet.errors import ModelNotAvailableError
from ovdet.image_io import load_image, original_size
from ovdet.towers.loaded_clip import LoadedCLIP
from ovdet.towers.loader import load_clip
from ovdet.models.crop_rescorer import CropRescorer
from ovdet.models.detection import Detection, to_detections
from ovdet.models.exemplar import encode_exemplars, exemplar_labels
from ovdet.models.head import DetectionHead
from ovdet.models.model_folder import (
    atomic_folder,
    check_state,
    file_checksums,
    load_weights,
    one_line_errors,
    read_config,
    refuse_pickled_weights,
    verify_checksums,
)
from ovdet.models.negative_queries import negative_veto
from ovdet.models.text_encoder import TextEncoder, validate_queries
from ovdet.postprocess import PostProcess
from ovdet.preprocess import ImagePreprocessor
from ovdet.text.templates import resolve_templates

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CLIP_DIR = "clip"
# Parameters that belong to the CLIP itself and are saved in its own folder, not with the head.
_CLIP_PREFIXES = ("backbone.vision.", "text_encoder.")


class Detector(nn.Module):
    """Open-vocabulary detector: CLIP dense features + detection head + frozen CLIP text tower.

    Args:
        clip: the loaded CLIP towers.
        image_size: side of the square input; a multiple of the backbone stride.
        box_layers: depth of the head's box MLP.
        info: free metadata saved in config.json (e.g. `untrained`, training recipe).
        rescore: CropRescorer settings (`topk`, `weight`, `context`) to classify the best regions
            by their CLIP-encoded crops; None scores with the head alone.
        feature_stride: region grid of towers that offer a choice (ResNet: 16 or 32); None keeps
            the tower's own.
        context_blocks: 3x3 conv blocks over the region grid before the box and objectness MLPs.
        templates: the prompt templates queries get when a caller names none (a set name or a list).
    """

    def __init__(
        self,
        clip: LoadedCLIP,
        image_size: int,
        box_layers: int = 3,
        info: dict | None = None,
        rescore: dict | None = None,
        feature_stride: int | None = None,
        context_blocks: int = 0,
        templates: str | list[str] = "single",
    ):
        super().__init__()
        resolve_templates(templates)  # an unknown set fails here, not at the first query
        if feature_stride is not None:
            if not hasattr(clip.backbone, "set_feature_stride"):
                raise ValueError(f"{type(clip.backbone).__name__} has a fixed region grid; drop feature_stride={feature_stride}")
            if feature_stride != clip.backbone.feature_stride:  # a change resets the token LayerNorm
                clip.backbone.set_feature_stride(feature_stride)
        if image_size <= 0 or image_size % clip.backbone.stride:
            raise ValueError(
                f"image_size={image_size} must be a positive multiple of the backbone stride {clip.backbone.stride}"
            )
        self.clip = clip  # a plain dataclass: its modules are registered below, once
        self.backbone = clip.backbone
        self.text_encoder = TextEncoder(clip.text_tower)
        self.head = DetectionHead(self.backbone.width, self.text_encoder.embed_dim, box_layers, context_blocks)
        self.image_size = image_size
        self.box_layers, self.context_blocks, self.templates = box_layers, context_blocks, templates
        self.info = dict(info or {})
        self.preprocessor = ImagePreprocessor(image_size, self.backbone.image_mean, self.backbone.image_std)
        self.set_rescore(rescore)

    def set_rescore(self, rescore: dict | None) -> None:
        """Turn crop re-scoring on (a dict of CropRescorer settings) or off (None)."""
        self.rescore = dict(rescore) if rescore else None
        self.rescorer = None
        if self.rescore is not None:
            if not hasattr(self.backbone, "encode_crops"):
                raise ValueError(f"crop re-scoring needs a tower with encode_crops (ResNet CLIP); {type(self.backbone).__name__} has none")
            scale = getattr(self.clip.model, "logit_scale", None)
            logit_scale = float(scale.detach().exp()) if scale is not None else 100.0
            self.rescorer = CropRescorer(logit_scale=logit_scale, **self.rescore)

    @classmethod
    def from_clip(
        cls,
        clip: str,
        image_size: int | None = None,
        trainable_layers: int = 0,
        box_layers: int = 3,
        rescore: dict | None = None,
        feature_stride: int | None = None,
        context_blocks: int = 0,
        templates: str | list[str] = "single",
    ) -> "Detector":
        """A detector with a fresh (untrained) head on a CLIP hub id or folder; Hydra builds this.

        `image_size` defaults to the CLIP's own training resolution; set it higher to detect small things.
        """
        loaded = load_clip(clip, trainable_layers)
        size = image_size or loaded.backbone.default_image_size
        return cls(loaded, size, box_layers, info={"untrained": True}, rescore=rescore, feature_stride=feature_stride,
                   context_blocks=context_blocks, templates=templates)

    @classmethod
    def from_config(cls, clip: LoadedCLIP, config: dict) -> "Detector":
        """The (untrained) detector a saved `config` describes, on a loaded CLIP; weights come after."""
        return cls(clip, config["image_size"], config.get("box_layers", 3), config.get("info"), rescore=config.get("rescore"),
                   feature_stride=config.get("feature_stride"), context_blocks=config.get("context_blocks", 0),
                   templates=config.get("templates", "single"))

    @property
    def device(self) -> torch.device:
        return self.head.class_proj.weight.device

    @property
    def untrained(self) -> bool:
        return bool(self.info.get("untrained", False))

    def encode_queries(self, queries: list[str], templates=None, reduce: bool = True) -> torch.Tensor:
        """L2-normalised query embeddings, [Q, E] (or [T, Q, E] with reduce=False); cached in memory,
        and pre-filled from disk by `load_vocab` (a file of `ovdet embed-vocab`). Do not modify in place.
        `templates` None: the model's own (`self.templates`)."""
        return self.text_encoder.encode(queries, self.prompt_templates(templates), reduce=reduce)

    def prompt_templates(self, templates=None):
        """The templates a call uses: the ones it names, else the model's own (`templates` in config.json)."""
        return self.templates if templates is None else templates

    def load_vocab(self, path) -> list[str]:
        """Pre-fill the text cache from an `ovdet embed-vocab` file; returns its names. A file made
        with another model is refused (ValueError)."""
        return self.text_encoder.load_vocab(path).names

    # ---- speed: precision and compilation (answers unchanged within bf16 rounding) -----------
    precision = "fp32"  # what the vision tower runs in now; see set_precision
    _bf16_weights = None  # a precision.Bf16Weights once set_precision is called

    def set_precision(self, precision: str = "auto") -> str:
        """Run the vision tower in "bf16" or "fp32"; "auto" picks bf16 only where it is faster
        (see `ovdet.models.precision.resolve_precision`). Call after moving the model to its device.

        bf16 casts the frozen tower's weights once and "fp32" restores them exactly (`Bf16Weights`).
        The head, the text tower and every output stay fp32. Returns the precision now in force.
        """
        from ovdet.towers.vision_resnet import CLIPResNetBackbone
        from ovdet.models.precision import Bf16Weights, resolve_precision

        vision = self.backbone.vision
        kind = "resnet" if isinstance(self.backbone, CLIPResNetBackbone) else "vit"
        resolved = resolve_precision(precision, self.device, kind, any(p.requires_grad for p in vision.parameters()))
        if self._bf16_weights is None:
            self._bf16_weights = Bf16Weights(vision)
        self._bf16_weights.set(resolved == "bf16")
        self.precision = resolved
        return resolved

    def set_compile(self, enabled: bool = True, **options) -> None:
        """Compile the vision backbone with `torch.compile` (`options`: mode, dynamic, ...), or undo it.

        In place (`nn.Module.compile`), so weights and state_dict keys are unchanged. The first
        call per input shape pays the compilation (tens of seconds to minutes on a CPU). Call it
        after `set_precision`: with `options={"freezing": True}` (weights folded in as constants,
        fastest on CPU) later weight changes are not seen.
        """
        if enabled:
            self.backbone.compile(**options)
        else:
            self.backbone._compiled_call_impl = None

    def forward(
        self,
        pixel_values: torch.Tensor,
        query_embeds: torch.Tensor,
        query_mask: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """pixel_values [B, 3, S, S]; query_embeds [Q, E] or [B, Q, E]; returns the output contract
        (`pred_boxes` [B, P, 4], `logits` [B, P, Q], `objectness` [B, P], `region_embeds` [B, P, E])."""
        if self.precision == "bf16":
            with torch.autocast(self.device.type, dtype=torch.bfloat16):
                feats = self.backbone(pixel_values)
            tokens = feats.tokens.float()  # [B, P, D]: the head and the scores stay fp32
        else:
            feats = self.backbone(pixel_values)
            tokens = feats.tokens
        return self.head(tokens, feats.grid, query_embeds, query_mask)

    @torch.inference_mode()
    def predict(
        self,
        pixel_values: torch.Tensor,
        queries: list[str],
        templates=None,
        template_mode="embed",
        query_embeds: torch.Tensor | None = None,
        negatives: list[str] | None = None,
    ):
        """Forward with text queries; `template_mode="logit"` averages logits over templates (OWL-ViT).

        With crop re-scoring on, crops are compared with the template-averaged query embeddings
        whatever the mode (CLIP's own zero-shot recipe). `query_embeds` [X, E] (image exemplars,
        `encode_exemplars`) are scored after the texts: `logits` is [B, P, Q + X]. `negatives` are
        scored jointly with those and only add `negative_veto` [B, P, Q + X] (see negative_queries).
        """
        if template_mode not in ("embed", "logit"):
            raise ValueError(f"template_mode must be 'embed' or 'logit', got {template_mode!r}")
        pixel_values = pixel_values.to(self.device)
        negatives = list(negatives or [])
        if self.rescorer is not None:
            positives = self._query_bank(queries, templates, query_embeds)  # [Q + X, E]
            out = self(pixel_values, positives)
            # Reference names compete in the softmax unless asked for; negatives never change kept scores.
            reference = self._reference_embeds(list(queries), templates)  # [R, E] or None
            out["logits"] = self.rescorer(self.backbone, pixel_values, out, positives, reference)
            if negatives:
                joint = torch.cat([positives, self.encode_queries(negatives, templates)])  # [Q + X + N, E]
                joint_ref = self._reference_embeds([*queries, *negatives], templates)  # [R', E] or None
                joint_logits = self.rescorer(self.backbone, pixel_values, out, joint, joint_ref)  # [B, P, Q + X + N]
                out["negative_veto"] = negative_veto(joint_logits, len(positives))
            return out
        if template_mode == "embed":
            out = self(pixel_values, self._query_bank(queries, templates, query_embeds, negatives))
        else:
            per_template = self._query_bank(queries, templates, query_embeds, negatives, reduce=False)  # [T, Q, E]
            t, q, e = per_template.shape
            out = self(pixel_values, per_template.reshape(t * q, e))
            b, p, _ = out["logits"].shape
            out["logits"] = out["logits"].view(b, p, t, q).mean(2)  # [B, P, Q]
        if negatives:
            num_positive = out["logits"].shape[-1] - len(negatives)
            out["negative_veto"] = negative_veto(out["logits"], num_positive)  # [B, P, Q + X]
            out["logits"] = out["logits"][..., :num_positive]
        return out

    def _reference_embeds(self, asked: list[str], templates) -> torch.Tensor | None:
        """The re-scorer's reference names that nobody asked for, embedded: [R, E], or None."""
        names = self.rescorer.competitors(asked)
        return self.encode_queries(names, templates) if names else None

    def _query_bank(self, queries, templates, query_embeds=None, negatives=(), reduce: bool = True) -> torch.Tensor:
        """Texts, then image exemplars, then negative texts: [Q + X + N, E] (or [T, Q + X + N, E])."""
        parts = [self.encode_queries(list(queries), templates, reduce=reduce)] if len(queries) else []
        if query_embeds is not None and len(query_embeds):
            extra = query_embeds.to(self.device, torch.float32)  # [X, E], one embedding for every template
            temps = resolve_templates(self.prompt_templates(templates))
            parts.append(extra if reduce else extra.expand(len(temps), -1, -1))
        if negatives:
            parts.append(self.encode_queries(list(negatives), templates, reduce=reduce))
        if not parts:
            raise ValueError("no queries: give at least one text query or image exemplar")
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=-2)

    def encode_exemplars(self, exemplars) -> torch.Tensor:
        """Image exemplars [(image, (x1, y1, x2, y2) pixels), ...] -> query embeddings [X, E] (one-shot
        detection): CLIP's crop embedding with crop re-scoring, else the best region's head embedding."""
        return encode_exemplars(self, exemplars)

    def detect(
        self,
        images,
        queries: list[str],
        threshold: float = 0.1,
        nms: float | None = 0.5,
        max_detections: int = 100,
        templates=None,
        template_mode: str = "embed",
        batch_size: int = 8,
        negatives: list[str] | None = None,
        exemplars: list[tuple] | None = None,
    ) -> list[list[Detection]]:
        """Detect free-text queries in images (paths, PIL images or numpy arrays, or one of them).

        `exemplars`: (image, (x1, y1, x2, y2) pixels) pairs, each one more query, named "exemplar i"
        (queries may then be empty). `negatives`: texts that drop a detection whose region matches
        them at least as well as its own query. Returns, per image, detections sorted by score with
        boxes in original pixels; labels index the queries, then the exemplars.
        """
        if not isinstance(images, (list, tuple)):
            images = [images]
        queries = validate_queries(queries) if queries or not exemplars else []
        negatives = validate_queries(negatives) if negatives else []
        post = PostProcess(score_threshold=threshold, nms_threshold=nms, max_detections=max_detections)
        results: list[list[Detection]] = []
        self.eval()
        exemplar_embeds = self.encode_exemplars(exemplars) if exemplars else None
        labels = queries + exemplar_labels(len(exemplars or []))
        for start in range(0, len(images), batch_size):
            pil = [load_image(im) for im in images[start : start + batch_size]]
            out = self.predict(self.preprocessor(pil), queries, templates, template_mode, exemplar_embeds, negatives)
            results += to_detections(out, [original_size(im) for im in pil], labels, post)  # file's pixels
        return results

    # ---- persistence -------------------------------------------------------------------------
    def head_state_dict(self) -> dict[str, torch.Tensor]:
        """Everything trained on top of CLIP (head, merge norm), without the CLIP weights."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith(_CLIP_PREFIXES)}

    def config(self, clip_path: str) -> dict:
        return {
            "model_type": "ovdet",
            "format_version": 1,
            "clip": {"format": self.clip.format, "path": clip_path},
            "image_size": self.image_size,
            "box_layers": self.box_layers,
            "context_blocks": self.context_blocks,
            "templates": self.templates,
            "trainable_layers": getattr(self.backbone, "trainable_layers", 0),
            "rescore": self.rescore,
            "feature_stride": getattr(self.backbone, "feature_stride", None),
            "info": self.info,
        }

    def save_pretrained(self, path: str | Path, copy_clip: bool = True, dtype: torch.dtype | None = None) -> Path:
        """Write a folder: `config.json`, head weights in `model.safetensors`, the CLIP in `clip/`
        (or, with copy_clip=False and a frozen tower, a reference to its id). Written to a temp
        folder first and moved into place, so a failure never leaves a half-written model."""
        path = Path(path)
        if not copy_clip and getattr(self.backbone, "trainable_layers", 0) > 0:
            raise ValueError("the vision tower was fine-tuned; save it with copy_clip=True")
        with atomic_folder(path) as tmp:
            clip_path = CLIP_DIR if copy_clip else self.clip.reference
            if copy_clip:
                self.clip.save(tmp / CLIP_DIR, dtype=dtype)
            state = {k: v.detach().to(dtype or v.dtype).contiguous().cpu() for k, v in self.head_state_dict().items()}
            save_file(state, str(tmp / WEIGHTS_NAME))
            config = {**self.config(clip_path), "checksums": file_checksums(tmp)}  # verified by from_pretrained
            (tmp / CONFIG_NAME).write_text(json.dumps(config, indent=2))
        return path

    @classmethod
    def from_pretrained(cls, path: str | Path, trainable_layers: int | None = None) -> "Detector":
        """Load an ovdet folder; a plain CLIP id or folder gives a detector with an untrained head.

        Safetensors only; config.json keys, file checksums and weight shapes are checked first,
        so a broken folder is one `ModelNotAvailableError` that names the file (see `model_folder`).
        """
        path = Path(path)
        config = read_config(path)
        if config is None:
            refuse_pickled_weights(path)
            with one_line_errors(path):
                return cls.from_clip(str(path), trainable_layers=trainable_layers or 0)
        verify_checksums(path, config.get("checksums"))
        clip_ref = config["clip"]["path"]
        clip_path = path / clip_ref if (path / clip_ref).exists() else Path(clip_ref)
        refuse_pickled_weights(clip_path)
        layers = config.get("trainable_layers", 0) if trainable_layers is None else trainable_layers
        with one_line_errors(clip_path):
            clip = load_clip(str(clip_path), layers)
        try:
            det = cls.from_config(clip, config)
        except ValueError as err:
            raise ModelNotAvailableError(f"'{path / CONFIG_NAME}' describes no valid model: {err}") from None
        weights = path / WEIGHTS_NAME
        state = load_weights(weights)
        check_state(det, state, weights, ignore=_CLIP_PREFIXES)
        det.load_state_dict(state, strict=False)
        return det.eval()

