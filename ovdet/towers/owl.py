"""OWL-ViT and OWLv2 checkpoints (transformers `save_pretrained` folders) as ovdet detectors.

Their architecture is ovdet's: a CLIP ViT whose patch tokens are multiplied by the class token and
layer-normalised, a 3-layer box MLP over a grid prior, a class head with a learned shift and an
elu + 1 scale, and (OWLv2) a 3-layer objectness MLP. The towers are used as transformers builds
them; the heads' weights are copied into ovdet's `DetectionHead`, whose `box_bias="corner"` and
`preprocess` modes reproduce OWL's grid prior and image processors, so outputs equal
transformers' (tests/test_owl.py).
"""

from __future__ import annotations

from pathlib import Path

import torch

from ovdet.towers.image_processor_config import processor_image_size
from ovdet.towers.loader import from_pretrained_checked, json_file, owl_towers

KINDS = ("owlvit", "owlv2")
PREPROCESS = {"owlvit": "stretch", "owlv2": "pad_gaussian"}
BOX_LAYERS = 3  # dense0..dense2 of OWL's box (and OWLv2's objectness) head


def _model_type(path: Path) -> tuple[str | None, list[str]]:
    """`model_type` and `architectures` of a local folder's config.json ((None, []) when it has none)."""
    data = json_file(path, "config.json") if Path(path).is_dir() else None
    return (data.get("model_type"), data.get("architectures") or []) if isinstance(data, dict) else (None, [])


def is_owl_detection_folder(path: str | Path) -> bool:
    """A transformers OwlViTForObjectDetection / Owlv2ForObjectDetection folder (not a towers-only one)."""
    kind, architectures = _model_type(Path(path))
    return kind in KINDS and any(a.endswith("ForObjectDetection") for a in architectures)


def load_owl_detector(detector_cls, path: str | Path, trainable_layers: int = 0, image_size: int | None = None,
                      reference: str | None = None):
    """An OWL-ViT / OWLv2 detection folder -> a trained `detector_cls` (ovdet's Detector) computing what
    transformers computes.

    `image_size` other than the checkpoint's own interpolates the position embeddings (transformers'
    `interpolate_pos_encoding=True`); the default is the size in its image processor config, else its own.
    `reference`: what the user named (a hub id whose cached snapshot `path` is); default `path`.
    """
    import transformers

    from ovdet.models.detector_config import DetectorConfig

    path = Path(path)
    reference = reference or str(path)
    kind, _ = _model_type(path)

    det_cls = getattr(transformers, f"{'OwlViT' if kind == 'owlvit' else 'Owlv2'}ForObjectDetection")
    owl = from_pretrained_checked(det_cls, path, reference)
    base = getattr(owl, kind)
    loaded = owl_towers(base, path, kind, trainable_layers, reference)
    size = image_size or processor_image_size(path) or owl.config.vision_config.image_size
    config = DetectorConfig(
        clip={"format": kind, "path": reference}, image_size=size, box_layers=BOX_LAYERS,
        objectness_layers=BOX_LAYERS if kind == "owlv2" else 0, box_bias="corner", preprocess=PREPROCESS[kind],
        templates="single", threshold=0.1, trainable_layers=trainable_layers,
        info={"untrained": False, "source": {"format": kind, "path": reference}},
    )
    detector = detector_cls(loaded, config)
    copy_head_weights(owl, detector, kind)
    return detector.eval()


@torch.no_grad()
def copy_head_weights(owl, detector, kind: str) -> None:
    """OWL's heads -> ovdet's: box_head.dense{i} -> box_mlp.layers[i], class_head.dense0 -> class_proj,
    logit_shift / logit_scale as they are, objectness_head.dense{i} (OWLv2), layer_norm -> merge_norm."""
    head = detector.head
    pairs = [(owl.box_head, head.box_mlp), (owl.objectness_head, head.objectness_mlp)] if kind == "owlv2" else [
        (owl.box_head, head.box_mlp)]
    for source, target in pairs:
        for i, layer in enumerate(target.layers):
            layer.load_state_dict(getattr(source, f"dense{i}").state_dict())
    head.class_proj.load_state_dict(owl.class_head.dense0.state_dict())
    head.logit_shift.load_state_dict(owl.class_head.logit_shift.state_dict())
    head.logit_scale.load_state_dict(owl.class_head.logit_scale.state_dict())
    detector.backbone.merge_norm.load_state_dict(owl.layer_norm.state_dict())
