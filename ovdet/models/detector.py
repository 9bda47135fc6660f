"""The Detector composes backbone -> head -> text scoring. Scoring policy (`scoring`), the end-user
pipeline (`ovdet.pipeline`), speed switches (`precision`) and save/load (`detector_io`) live beside it."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from ovdet.errors import OvdetWarning
from ovdet.models.crop_rescorer import CropRescorer
from ovdet.models.detector_config import DetectorConfig
from ovdet.models.head import DetectionHead
from ovdet.models.region_classifier import RegionClassifier
from ovdet.models.region_pool_scorer import RegionPoolScorer
from ovdet.models.text_encoder import TextEncoder
from ovdet.preprocess import ImagePreprocessor
from ovdet.text.templates import resolve_templates
from ovdet.towers.loaded_clip import LoadedCLIP


class Detector(nn.Module):
    """Open-vocabulary detector: CLIP dense features + detection head + frozen CLIP text tower.

    Args:
        clip: the loaded CLIP towers.
        config: every setting (`DetectorConfig`: image size, head shape, preprocessing, templates, ...).
    """

    def __init__(self, clip: LoadedCLIP, config: DetectorConfig):
        super().__init__()
        config.validate()
        resolve_templates(config.templates)  # an unknown set fails here, not at the first query
        backbone = clip.backbone
        if config.feature_stride is not None and config.feature_stride != getattr(backbone, "feature_stride", None):
            if not hasattr(backbone, "set_feature_stride"):
                raise ValueError(f"{type(backbone).__name__} has a fixed region grid; drop feature_stride={config.feature_stride}")
            backbone.set_feature_stride(config.feature_stride)  # a change resets the token LayerNorm
        if config.image_size % backbone.stride:
            raise ValueError(f"image_size={config.image_size} must be a multiple of the backbone stride {backbone.stride}")
        self.clip = clip  # a plain dataclass: its modules are registered below, once
        self.settings = config
        self.backbone = backbone
        self.text_encoder = TextEncoder(clip.text_tower)
        self.head = DetectionHead(backbone.width, self.text_encoder.embed_dim, config.box_layers, config.context_blocks,
                                  config.objectness_layers, config.box_bias)
        if clip.head_init and config.info.get("untrained", False):  # SigLIP: start from its sigmoid scale and bias
            self.head.init_logit_scale(**clip.head_init)
        self.preprocessor = ImagePreprocessor(config.image_size, backbone.image_mean, backbone.image_std, config.preprocess)
        hidden = (config.region_scoring or {}).get("classifier_hidden")
        # F-VLM's trained region classifier (tools/train_region_classifier.py), saved with the head when there is one
        self.region_classifier = (RegionClassifier(backbone.region_stage_features, self.text_encoder.embed_dim, hidden)
                                  if hidden and hasattr(backbone, "region_stage") else None)
        self.rescorer: CropRescorer | None = None
        self._build_rescorer()

    # ---- the settings users read --------------------------------------------------------------
    image_size = property(lambda self: self.settings.image_size)
    templates = property(lambda self: self.settings.templates)
    threshold = property(lambda self: self.settings.threshold, doc="the model's default score threshold")
    rescore = property(lambda self: self.settings.rescore, doc="crop re-scoring settings, or None")
    region_scoring = property(lambda self: self.settings.region_scoring, doc="one-pass region scoring settings, or None")
    untrained = property(lambda self: bool(self.settings.info.get("untrained", False)))

    @property
    def info(self) -> dict:
        return self.settings.info

    @info.setter
    def info(self, value: dict) -> None:
        self.settings.info = dict(value)

    @property
    def device(self) -> torch.device:
        return self.head.class_proj.weight.device

    def set_rescore(self, rescore: dict | None) -> None:
        """Turn crop re-scoring on (a dict of CropRescorer settings) or off (None). While on, it is what
        scores, whatever `region_scoring` says."""
        before = self.settings.rescore
        self.settings.rescore = dict(rescore) if rescore else None
        self._build_rescorer_or_restore(rescore=before)

    def set_region_scoring(self, region_scoring: dict | None) -> None:
        """Turn one-pass region scoring on (a dict of RegionPoolScorer settings) or off (None)."""
        before = self.settings.region_scoring
        self.settings.region_scoring = dict(region_scoring) if region_scoring else None
        self._build_rescorer_or_restore(region_scoring=before)

    def _build_rescorer_or_restore(self, **before) -> None:
        """Build the scorer; a tower that cannot score that way leaves the detector as it was (ValueError)."""
        try:
            self._build_rescorer()
        except ValueError:
            for key, value in before.items():
                setattr(self.settings, key, value)
            self._build_rescorer()
            raise

    def _build_rescorer(self) -> None:
        """`self.rescorer`: crops when `rescore` is set, else region pooling when `region_scoring` is, else None."""
        crops, pooled = self.settings.rescore, self.settings.region_scoring
        self.rescorer = None
        scale = getattr(self.clip.model, "logit_scale", None)
        logit_scale = float(scale.detach().exp()) if scale is not None else 100.0
        if crops:
            if not hasattr(self.backbone, "encode_crops"):
                raise ValueError(f"crop re-scoring needs a tower with encode_crops (ResNet CLIP); {type(self.backbone).__name__} has none")
            self.rescorer = CropRescorer(**{"logit_scale": logit_scale, **crops})  # config may name its own
        elif pooled:
            if not hasattr(self.backbone, "pool_region_features"):
                raise ValueError(f"region_scoring needs a tower that pools its own regions (ResNet CLIP); "
                                 f"{type(self.backbone).__name__} has none, set region_scoring to null")
            if pooled.get("classifier_hidden") and self.region_classifier is None:
                raise ValueError("region_scoring.classifier_hidden names a trained region classifier this detector does "
                                 "not hold; train one with tools/train_region_classifier.py or drop the classifier_* keys")
            self.rescorer = RegionPoolScorer(**{"logit_scale": logit_scale, **pooled}, classifier=self.region_classifier)

    def config(self, clip_path: str) -> dict:
        """The `config.json` of this detector with its CLIP at `clip_path`."""
        trainable = getattr(self.backbone, "trainable_layers", 0)
        stride = getattr(self.backbone, "feature_stride", None)
        clip = {"format": self.clip.format, "path": clip_path}
        return {**self.settings.asdict(), "clip": clip, "trainable_layers": trainable, "feature_stride": stride,
                "checksums": {}}

    # ---- text --------------------------------------------------------------------------------
    def prompt_templates(self, templates=None):
        """The templates a call uses: the ones it names, else the model's own (`templates` in config.json)."""
        return self.templates if templates is None else templates

    def encode_queries(self, queries: list[str], templates=None, reduce: bool = True) -> torch.Tensor:
        """L2-normalised query embeddings, [Q, E] (or [T, Q, E] with reduce=False); cached in memory,
        and pre-filled from disk by `load_vocab`. Do not modify in place. `templates` None: the model's own."""
        return self.text_encoder.encode(queries, self.prompt_templates(templates), reduce=reduce)

    def load_vocab(self, path) -> list[str]:
        """Pre-fill the text cache from an `ovdet embed-vocab` file; returns its names (ValueError if made
        with another model)."""
        return self.text_encoder.load_vocab(path).names

    def encode_exemplars(self, exemplars) -> torch.Tensor:
        """Image exemplars [(image, (x1, y1, x2, y2) pixels), ...] -> query embeddings [X, E] (one-shot)."""
        from ovdet.models.exemplar import encode_exemplars

        return encode_exemplars(self, exemplars)

    # ---- the network -------------------------------------------------------------------------
    def forward(self, pixel_values: torch.Tensor, query_embeds: torch.Tensor,
                query_mask: torch.Tensor | None = None, keep_region_map: bool = False) -> dict[str, torch.Tensor]:
        """pixel_values [B, 3, S, S]; query_embeds [Q, E] or [B, Q, E]; returns the output contract
        (`pred_boxes` [B, P, 4], `logits` [B, P, Q], `objectness` [B, P], `region_embeds` [B, P, E]), and
        with `keep_region_map` the tower's `region_map` [B, C, h, w] (what region scoring pools from)."""
        if self.precision == "bf16":
            with torch.autocast(self.device.type, dtype=torch.bfloat16):
                feats = self.backbone(pixel_values)
        else:
            feats = self.backbone(pixel_values)
        out = self.head(feats.tokens.float(), feats.grid, query_embeds, query_mask)  # fp32 (bf16: its context convs)
        if keep_region_map:
            out["region_map"] = feats.region_map
        return out

    @torch.inference_mode()
    def predict(self, pixel_values: torch.Tensor, queries: list[str], templates=None, template_mode="embed",
                query_embeds: torch.Tensor | None = None, negatives: list[str] | None = None):
        """Forward with text queries (see `ovdet.models.scoring`): `query_embeds` [X, E] (exemplars) are
        scored after the texts, `negatives` only add `negative_veto` [B, P, Q + X]."""
        from ovdet.models.scoring import build_query_bank, score

        bank = build_query_bank(self, queries, templates, template_mode, query_embeds, negatives)
        return score(self, pixel_values.to(self.device), bank)

    def detect(self, images, queries: list[str], **options):
        """Detect free-text queries in images (paths, PIL images or arrays, or one); see `ovdet.pipeline.detect`.
        The first call on an untrained head warns (`OvdetWarning`, once per detector): its boxes are the grid."""
        from ovdet.pipeline import detect

        results = detect(self, images, queries, **options)  # a call refused for bad input does not use up the warning
        if self.untrained and not self._warned_untrained:
            from ovdet.models.detection import UNTRAINED_BANNER

            self._warned_untrained = True
            warnings.warn(f"{UNTRAINED_BANNER}: this detector's head is untrained, so its boxes and scores are "
                          "meaningless until it is trained (`ovdet train`)", OvdetWarning, stacklevel=2)
        return results

    _warned_untrained = False  # set on the instance by the first `detect`

    # ---- speed (answers unchanged within bf16 rounding; see ovdet.models.precision) -------------
    precision = "fp32"
    runtime = "torch"

    def set_precision(self, precision: str = "auto", calibration: list | None = None) -> str:
        """Run the vision tower in "bf16", "int8" or "fp32" ("auto": bf16 where it is faster); returns what is
        in force. `calibration`: images a ResNet tower's int8 activation ranges are taken from. Under another
        runtime (`set_runtime`) the precision is that runtime's."""
        from ovdet.models.precision import set_precision

        self.__dict__["_requested_precision"] = precision
        if self.runtime != "torch":
            self.set_runtime(self.runtime, precision, calibration)
            return self.runtime_precision
        return set_precision(self, precision, calibration)

    def set_runtime(self, runtime: str = "torch", precision: str | None = None, calibration: list | None = None) -> str:
        """Run the network on "torch", "onnxruntime" or "openvino" (ovdet's own exported graph, cached on disk), or
        "auto" (the fastest installed, measured once on this machine); texts, exemplars, negatives and
        post-processing stay ovdet's own. Returns the runtime in force. `precision` None: the last one asked for."""
        from ovdet.runtime.runtime_setting import set_runtime

        return set_runtime(self, runtime, precision, calibration)

    @property
    def runtime_precision(self) -> str:
        """The precision the network runs in, on whichever runtime."""
        engine = self.__dict__.get("_engine")
        return engine.precision if engine is not None else self.precision

    def set_compile(self, enabled: bool = True, **options) -> None:
        """Compile the vision backbone with `torch.compile` (in place, state_dict unchanged), or undo it."""
        from ovdet.models.precision import set_compile

        set_compile(self, enabled, **options)

    # ---- persistence (ovdet.models.detector_io) ------------------------------------------------
    @classmethod
    def from_clip(cls, clip: str, image_size: int | None = None, trainable_layers: int = 0, **settings) -> "Detector":
        """A detector with a fresh (untrained) head on a CLIP hub id or folder; Hydra builds this.
        `settings`: any `DetectorConfig` key (box_layers, context_blocks, templates, rescore, ...)."""
        from ovdet.models.detector_io import from_clip

        return from_clip(cls, clip, image_size, trainable_layers, **settings)

    @classmethod
    def from_config(cls, clip: LoadedCLIP, config: dict) -> "Detector":
        """The (untrained) detector a saved `config` describes, on a loaded CLIP; weights come after."""
        return cls(clip, DetectorConfig.from_dict(config))

    @classmethod
    def from_pretrained(cls, path: str | Path, trainable_layers: int | None = None) -> "Detector":
        """Load an ovdet folder, an OWL-ViT / OWLv2 folder, or a CLIP-family tower (untrained head)."""
        from ovdet.models.detector_io import from_pretrained

        return from_pretrained(cls, path, trainable_layers)

    def save_pretrained(self, path: str | Path, copy_clip: bool = True, dtype: torch.dtype | None = None) -> Path:
        """Write `config.json`, the head in `model.safetensors` and the CLIP in `clip/`, atomically."""
        from ovdet.models.detector_io import save_pretrained

        return save_pretrained(self, path, copy_clip, dtype)

    def head_state_dict(self) -> dict[str, torch.Tensor]:
        """Everything trained on top of CLIP (head, merge norm), without the CLIP weights."""
        from ovdet.models.detector_io import CLIP_PREFIXES

        skip = CLIP_PREFIXES
        if not (self.settings.region_scoring or {}).get("classifier_hidden"):
            skip = (*skip, "region_classifier.")  # its config keys were dropped: so are its weights
        return {k: v for k, v in self.state_dict().items() if not k.startswith(skip)}
