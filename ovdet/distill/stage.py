"""The dense-distillation stage as `ovdet train` builds it: `cfg.model` -> `DistillTower`, `cfg.module` -> module.

`ovdet.training.run._fit` builds `cfg.model` first (its `image_size` and `backbone.image_mean/std` set the
data pipeline), then `cfg.module` with `detector=` that object. For this stage the "detector" is the CLIP
itself, seen as a region tower; `distill_module` turns it into a `DenseDistillModule` that remembers the
`LoadedCLIP` so `ExportTower` can write the distilled tower when training ends.
"""

from __future__ import annotations

from pathlib import Path

from ovdet.distill.module import DenseDistillModule
from ovdet.distill.region_tower import RegionTower, region_tower
from ovdet.errors import OvdetError
from ovdet.towers.loaded_clip import LoadedCLIP
from ovdet.towers.loader import load_clip


class DistillTower:
    """A CLIP folder (or hub id) loaded for distillation: what `_fit` asks of a model, plus the region tower.

    Args:
        clip: the CLIP to distil (any folder `load_clip` takes: open_clip ResNet, CLIP/OpenCLIP/SigLIP/OWL ViT).
        image_size: side of the square training input (the region grid is image_size / stride).
    """

    def __init__(self, clip: str, image_size: int):
        if not isinstance(image_size, int) or image_size < 1:
            raise OvdetError(f"model.image_size={image_size!r}; give the input side in pixels, e.g. 256")
        self.source = str(clip)
        self.image_size = image_size
        self.clip: LoadedCLIP = load_clip(clip)
        self.backbone = self.clip.backbone  # image_mean / image_std for the datamodule
        self.tower: RegionTower = region_tower(self.clip)


def distill_module(
    detector: DistillTower,
    proposals: str | None = None,
    proposal_threshold: float = 0.3,
    max_proposals: int = 8,
    names: list[str] | None = None,
    names_templates: str = "clip7",
    **settings,
) -> DenseDistillModule:
    """`DenseDistillModule` on the tower of `detector` (named so by `_fit`), which keeps the `LoadedCLIP` to save.
    `proposals`: a detector folder whose class-agnostic boxes the stage distils on (`DetectorProposals`);
    `names`: names whose ranking the student learns from the teacher's crops (`names_weight` in `settings`),
    encoded by the CLIP's own text tower with `names_templates`;
    `settings`: the module's own arguments (optimizer, trainable_layers, max_split, seed, scheduler, context)."""
    proposer = None
    if proposals is not None:
        from ovdet.distill.proposal_boxes import DetectorProposals

        backbone = detector.backbone
        proposer = DetectorProposals(str(proposals), detector.image_size, backbone.image_mean, backbone.image_std,
                                     proposal_threshold, max_proposals)
    if names:
        settings["name_embeddings"], settings["names_scale"] = name_bank(detector.clip, list(names), names_templates)
    module = DenseDistillModule(detector.tower, proposals=proposer, **settings)
    module.loaded_clip = detector.clip  # not an nn.Module: the student's weights are the clip's own modules
    module.clip_source = str(Path(detector.source))
    return module


def name_bank(clip: LoadedCLIP, names: list[str], templates: str) -> tuple:
    """([N, E] L2-normalised text embeddings of `names`, the CLIP's own logit scale (100 without one))."""
    import torch

    from ovdet.models.text_encoder import TextEncoder

    with torch.no_grad():
        embeddings = TextEncoder(clip.text_tower).encode(names, templates).float().clone()  # [N, E]
    scale = getattr(clip.model, "logit_scale", None)
    return embeddings, float(scale.detach().exp()) if scale is not None else 100.0
