"""Dense-feature zero-shot accuracy (issue N, item 4): does one pass of the tower name each boxed object?

Three ways to embed a ground-truth box, each scored against the prompt-averaged text embedding of every
name; a box is right when its own name is the most similar:
- box-pooled: the tower's dense map RoI-aligned over the box, through the tower's own pooling (one pass);
- centre cell: the single dense cell under the box centre, alone in the joint space (one pass);
- crop: the box cut out and embedded as an image (one pass per box; the ceiling the first two aim at).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ovdet.distill.region_embedding import check_boxes, crop_embeddings, dense_region_embeddings
from ovdet.distill.region_tower import RegionTower
from ovdet.errors import OvdetError
from ovdet.pretraining.zero_shot import classify, prompt_embeddings
from ovdet.text.templates import resolve_templates


def name_embeddings(text_tower, names: Sequence[str], templates: str | Sequence[str]) -> torch.Tensor:
    """One L2-normalised embedding per name, averaged over the templates: [N, E]."""
    templates = resolve_templates(templates if isinstance(templates, str) else list(templates))
    return prompt_embeddings(text_tower, [[t.format(name) for t in templates] for name in names])


def _accuracy(embeds: torch.Tensor, text_embeds: torch.Tensor, label_ids: list[torch.Tensor], names) -> float:
    """Fraction of the [K, E] embeddings whose nearest name is their label."""
    labels = torch.cat([torch.as_tensor(ids, dtype=torch.long).reshape(-1) for ids in label_ids])  # [K]
    if len(labels) != len(embeds):
        raise OvdetError(f"got {len(labels)} labels for {len(embeds)} boxes; pass one label id per box")
    if len(labels) == 0:
        raise OvdetError("no boxes to measure; pass at least one [K, 4] box with its label id")
    if labels.min() < 0 or labels.max() >= len(names):
        bad = labels[(labels < 0) | (labels >= len(names))].tolist()[:8]
        raise OvdetError(f"label ids {bad} do not index the {len(names)} names; use 0..{len(names) - 1}")
    return float((classify(embeds, text_embeds.to(embeds.device)).cpu() == labels).float().mean())


@torch.no_grad()
def box_pooled_accuracy(tower: RegionTower, text_tower, images: torch.Tensor, boxes: list[torch.Tensor],
                        names: Sequence[str], label_ids: list[torch.Tensor], templates="clip7") -> float:
    """Fraction in [0, 1] of boxes whose box-pooled dense embedding is nearest to their own name.

    Args:
        tower / text_tower: the vision tower's region view and the CLIP text tower.
        images: [B, 3, S, S] normalised. boxes: B tensors [K_i, 4] xyxy in input pixels.
        names: the vocabulary every box competes over. label_ids: B tensors [K_i], indices into names.
        templates: a template-set name ("clip7") or a list of templates.
    """
    embeds = dense_region_embeddings(tower, images, boxes)  # [K, E]
    return _accuracy(embeds, name_embeddings(text_tower, names, templates), label_ids, names)


def centre_cell_embeddings(tower: RegionTower, images: torch.Tensor, boxes: list[torch.Tensor]) -> torch.Tensor:
    """L2-normalised embedding of the one dense cell that holds each box's centre: [K, E]."""
    check_boxes(images, boxes)
    cells = tower.cell_embeddings(images)  # [B, E, h, w]
    h, w = cells.shape[-2:]
    side = images.shape[-1]
    picked = []
    for i, image_boxes in enumerate(boxes):
        centre = (image_boxes[:, :2] + image_boxes[:, 2:]).to(cells.device) / 2  # [K_i, 2] xy input pixels
        col = (centre[:, 0] * w / side).long().clamp(0, w - 1)  # [K_i]
        row = (centre[:, 1] * h / side).long().clamp(0, h - 1)  # [K_i]
        picked.append(cells[i][:, row, col].T)  # [E, K_i] -> [K_i, E]
    return F.normalize(torch.cat(picked), dim=-1)  # [K, E]


@torch.no_grad()
def centre_cell_accuracy(tower: RegionTower, text_tower, images: torch.Tensor, boxes: list[torch.Tensor],
                         names: Sequence[str], label_ids: list[torch.Tensor], templates="clip7") -> float:
    """As `box_pooled_accuracy`, from the one dense cell that holds each box's centre."""
    embeds = centre_cell_embeddings(tower, images, boxes)  # [K, E]
    return _accuracy(embeds, name_embeddings(text_tower, names, templates), label_ids, names)


@torch.no_grad()
def crop_accuracy(tower: RegionTower, text_tower, images: torch.Tensor, boxes: list[torch.Tensor],
                  names: Sequence[str], label_ids: list[torch.Tensor], templates="clip7") -> float:
    """As `box_pooled_accuracy`, from the tower's embedding of each box's crop (the teacher's view)."""
    embeds = crop_embeddings(tower, images, boxes)  # [K, E]
    return _accuracy(embeds, name_embeddings(text_tower, names, templates), label_ids, names)
