"""The Detector composes backbone -> head -> text scoring; postprocess stays outside the model."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ovdet.errors import ModelNotAvailableError
from ovdet.image_io import load_image
from ovdet.models.clip_loader import LoadedCLIP, load_clip
from ovdet.models.crop_rescorer import CropRescorer
from ovdet.models.detection import Detection
from ovdet.models.head import DetectionHead
from ovdet.models.text_encoder import TextEncoder, validate_queries
from ovdet.postprocess import PostProcess
from ovdet.preprocess import ImagePreprocessor

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
    """

    def __init__(
        self, clip: LoadedCLIP, image_size: int, box_layers: int = 3, info: dict | None = None, rescore: dict | None = None
    ):
        super().__init__()
        if image_size <= 0 or image_size % clip.backbone.stride:
            raise ValueError(
                f"image_size={image_size} must be a positive multiple of the backbone stride {clip.backbone.stride}"
            )
        self.clip = clip  # a plain dataclass: its modules are registered below, once
        self.backbone = clip.backbone
        self.text_encoder = TextEncoder(clip.text_tower)
        self.head = DetectionHead(self.backbone.width, self.text_encoder.embed_dim, box_layers=box_layers)
        self.image_size = image_size
        self.box_layers = box_layers
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
    ) -> "Detector":
        """A detector with a fresh (untrained) head on a CLIP hub id or folder; Hydra builds this.

        `image_size` defaults to the CLIP's own training resolution; set it higher to detect small things.
        """
        loaded = load_clip(clip, trainable_layers)
        size = image_size or loaded.backbone.default_image_size
        return cls(loaded, size, box_layers, info={"untrained": True}, rescore=rescore)

    @property
    def device(self) -> torch.device:
        return self.head.class_proj.weight.device

    @property
    def untrained(self) -> bool:
        return bool(self.info.get("untrained", False))

    def encode_queries(self, queries: list[str], templates="single", reduce: bool = True) -> torch.Tensor:
        """L2-normalised query embeddings, [Q, E] (or [T, Q, E] with reduce=False); cached."""
        return self.text_encoder.encode(queries, templates, reduce=reduce)

    def forward(
        self,
        pixel_values: torch.Tensor,
        query_embeds: torch.Tensor,
        query_mask: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """pixel_values [B, 3, S, S]; query_embeds [Q, E] or [B, Q, E]; returns the output contract
        (`pred_boxes` [B, P, 4], `logits` [B, P, Q], `objectness` [B, P], `region_embeds` [B, P, E])."""
        feats = self.backbone(pixel_values)
        return self.head(feats.tokens, feats.grid, query_embeds, query_mask)

    @torch.inference_mode()
    def predict(self, pixel_values: torch.Tensor, queries: list[str], templates="single", template_mode="embed"):
        """Forward with text queries; `template_mode="logit"` averages logits over templates (OWL-ViT).

        With crop re-scoring on, crops are compared with the template-averaged query embeddings
        whatever the mode (CLIP's own zero-shot recipe).
        """
        if template_mode not in ("embed", "logit"):
            raise ValueError(f"template_mode must be 'embed' or 'logit', got {template_mode!r}")
        pixel_values = pixel_values.to(self.device)
        if self.rescorer is not None:
            query_embeds = self.encode_queries(queries, templates)
            out = self(pixel_values, query_embeds)
            out["logits"] = self.rescorer(self.backbone, pixel_values, out, query_embeds)
            return out
        if template_mode == "embed":
            return self(pixel_values, self.encode_queries(queries, templates))
        per_template = self.encode_queries(queries, templates, reduce=False)  # [T, Q, E]
        t, q, e = per_template.shape
        out = self(pixel_values, per_template.reshape(t * q, e))
        b, p, _ = out["logits"].shape
        out["logits"] = out["logits"].view(b, p, t, q).mean(2)  # [B, P, Q]
        return out

    def detect(
        self,
        images,
        queries: list[str],
        threshold: float = 0.1,
        nms: float | None = 0.5,
        max_detections: int = 100,
        templates="single",
        template_mode: str = "embed",
        batch_size: int = 8,
    ) -> list[list[Detection]]:
        """Detect free-text queries in images (paths, PIL images or numpy arrays, or one of them).

        Returns, per image, detections sorted by score with boxes in original pixels.
        """
        if not isinstance(images, (list, tuple)):
            images = [images]
        queries = validate_queries(queries)
        post = PostProcess(score_threshold=threshold, nms_threshold=nms, max_detections=max_detections)
        results: list[list[Detection]] = []
        self.eval()
        for start in range(0, len(images), batch_size):
            pil = [load_image(im) for im in images[start : start + batch_size]]
            out = self.predict(self.preprocessor(pil), queries, templates, template_mode)
            for dets in post(out, [im.size for im in pil]):
                results.append(
                    [
                        Detection([round(v, 2) for v in box.tolist()], round(float(s), 4), int(l), queries[int(l)])
                        for box, s, l in zip(dets["boxes"], dets["scores"], dets["labels"])
                    ]
                )
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
            "trainable_layers": getattr(self.backbone, "trainable_layers", 0),
            "rescore": self.rescore,
            "info": self.info,
        }

    def save_pretrained(self, path: str | Path, copy_clip: bool = True, dtype: torch.dtype | None = None) -> Path:
        """Write a folder: `config.json`, head weights in `model.safetensors`, the CLIP in `clip/`
        (or, with copy_clip=False and a frozen tower, a reference to its id). Written to a temp
        folder first and moved into place, so a failure never leaves a half-written model."""
        path = Path(path)
        if not copy_clip and getattr(self.backbone, "trainable_layers", 0) > 0:
            raise ValueError("the vision tower was fine-tuned; save it with copy_clip=True")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}-", dir=path.parent))
        try:
            clip_path = CLIP_DIR if copy_clip else self.clip.reference
            if copy_clip:
                self.clip.save(tmp / CLIP_DIR, dtype=dtype)
            state = {k: v.detach().to(dtype or v.dtype).contiguous().cpu() for k, v in self.head_state_dict().items()}
            save_file(state, str(tmp / WEIGHTS_NAME))
            (tmp / CONFIG_NAME).write_text(json.dumps(self.config(clip_path), indent=2))
            _make_readable(tmp)  # mkdtemp is private (0700); a saved model is for everyone to read
            if path.exists():
                shutil.rmtree(path)
            tmp.rename(path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return path

    @classmethod
    def from_pretrained(cls, path: str | Path, trainable_layers: int | None = None) -> "Detector":
        """Load an ovdet folder; a plain CLIP id or folder gives a detector with an untrained head."""
        path = Path(path)
        config_file = path / CONFIG_NAME
        config = json.loads(config_file.read_text()) if config_file.is_file() else {}
        if config.get("model_type") != "ovdet":
            return cls.from_clip(str(path), trainable_layers=trainable_layers or 0)
        clip_ref = config["clip"]["path"]
        clip_path = path / clip_ref if (path / clip_ref).exists() else Path(clip_ref)
        layers = config.get("trainable_layers", 0) if trainable_layers is None else trainable_layers
        det = cls(
            load_clip(str(clip_path), layers), config["image_size"], config.get("box_layers", 3), config.get("info"),
            rescore=config.get("rescore"),
        )
        weights = path / WEIGHTS_NAME
        if not weights.is_file():
            raise ModelNotAvailableError(f"model folder '{path}' has no {WEIGHTS_NAME}; was it saved completely?")
        state = {k: v.float() for k, v in load_file(str(weights)).items()}
        missing, unexpected = det.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.startswith(_CLIP_PREFIXES)]
        if missing or unexpected:
            raise ModelNotAvailableError(f"'{weights}' does not match this model: missing {missing}, unexpected {unexpected}")
        return det.eval()


def _make_readable(folder: Path) -> None:
    """Give a written model folder the usual permissions (dirs 0755, files 0644)."""
    for item in [folder, *folder.rglob("*")]:
        item.chmod(0o755 if item.is_dir() else 0o644)
