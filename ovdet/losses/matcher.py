"""Hungarian matching of predicted regions to ground-truth boxes (DETR / OWL-ViT)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn
from torchvision.ops import box_convert, generalized_box_iou


def check_outputs_and_targets(outputs: dict[str, Tensor], targets: list[dict[str, Tensor]]) -> None:
    """Validate the output / target contract of docs/ARCHITECTURE.md; raise ValueError naming the fix."""
    logits, boxes = outputs["logits"], outputs["pred_boxes"]
    if logits.dim() != 3:
        raise ValueError(f"outputs['logits'] must be [B, P, Q], got shape {tuple(logits.shape)}")
    bs, num_regions, num_queries = logits.shape
    if boxes.shape != (bs, num_regions, 4):
        raise ValueError(f"outputs['pred_boxes'] must be [B, P, 4] = {(bs, num_regions, 4)}, got {tuple(boxes.shape)}")
    obj = outputs.get("objectness")
    if obj is not None and obj.shape != (bs, num_regions):
        raise ValueError(f"outputs['objectness'] must be [B, P] = {(bs, num_regions)}, got {tuple(obj.shape)}")
    mask = outputs.get("query_mask")
    if mask is not None and (mask.shape != (bs, num_queries) or mask.dtype != torch.bool):
        raise ValueError(
            f"outputs['query_mask'] must be bool [B, Q] = {(bs, num_queries)}, got {mask.dtype} {tuple(mask.shape)}"
        )
    if len(targets) != bs:
        raise ValueError(f"got {len(targets)} target dicts for a batch of {bs} images; pass one per image")
    for i, tgt in enumerate(targets):
        labels, tboxes = tgt["labels"], tgt["boxes_cxcywh"]
        if labels.dim() != 1 or tboxes.shape != (labels.numel(), 4):
            raise ValueError(
                f"target {i}: labels must be [N] and boxes_cxcywh [N, 4], "
                f"got {tuple(labels.shape)} and {tuple(tboxes.shape)}"
            )
        if labels.numel() == 0:
            continue
        if labels.min() < 0 or labels.max() >= num_queries:
            raise ValueError(
                f"target {i}: labels must index the image's {num_queries} queries, "
                f"got range [{int(labels.min())}, {int(labels.max())}]"
            )
        if mask is not None and not mask[i, labels.to(mask.device)].all():
            raise ValueError(f"target {i}: a label points at a padded query (query_mask False); fix the padding")
        if not torch.isfinite(tboxes).all() or (tboxes[:, 2:] <= 0).any():
            raise ValueError(
                f"target {i}: boxes_cxcywh must be finite with width and height > 0; drop degenerate boxes"
            )


class HungarianMatcher(nn.Module):
    """One-to-one assignment of predicted regions to target boxes.

    The cost mixes how likely a region is to be the target's query (focal-style, as in
    Deformable-DETR / OWL-ViT, so that it agrees with the focal classification loss) with L1
    and GIoU box distances. Regions left unmatched are background for the loss.
    """

    def __init__(
        self,
        cost_class: float = 2.0,
        cost_bbox: float = 5.0,
        cost_giou: float = 2.0,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
    ) -> None:
        super().__init__()
        if cost_class == 0 and cost_bbox == 0 and cost_giou == 0:
            raise ValueError("all matching costs are 0; set at least one of cost_class, cost_bbox, cost_giou > 0")
        self.cost_class = cost_class
        self.cost_bbox = cost_bbox
        self.cost_giou = cost_giou
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma

    @torch.no_grad()
    def forward(self, outputs: dict[str, Tensor], targets: list[dict[str, Tensor]]) -> list[tuple[Tensor, Tensor]]:
        """Match regions to targets, one cost matrix for the batch split per image.

        Args:
            outputs: dict with
                "logits": [B, P, Q] region x query logits (pre-sigmoid);
                "pred_boxes": [B, P, 4] cxcywh, normalised 0..1 to the padded input;
                "query_mask" (optional): [B, Q] bool, True = real query. Padded queries never
                    enter the cost, since targets may only point at real queries.
            targets: B dicts with
                "labels": [N] int64, index into that image's Q queries (N may be 0);
                "boxes_cxcywh": [N, 4] normalised 0..1.

        Returns:
            B tuples (pred_idx, tgt_idx) of int64 CPU tensors, each [min(P, N)]:
            region pred_idx[k] is assigned to target tgt_idx[k].
        """
        check_outputs_and_targets(outputs, targets)
        bs, num_regions, _ = outputs["logits"].shape
        device = outputs["logits"].device

        logits = outputs["logits"].flatten(0, 1).float()  # [B*P, Q]
        out_boxes = outputs["pred_boxes"].flatten(0, 1).float()  # [B*P, 4]
        tgt_ids = torch.cat([t["labels"] for t in targets]).to(device)  # [T]
        tgt_boxes = torch.cat([t["boxes_cxcywh"] for t in targets]).to(device).float()  # [T, 4]

        # Class cost: focal loss of calling the region positive minus that of calling it
        # negative, for the target's query. -log(p) = softplus(-x), -log(1-p) = softplus(x),
        # which stays finite for saturated logits. Cross-image columns are discarded below.
        x = logits[:, tgt_ids]  # [B*P, T]
        prob = x.sigmoid()
        alpha, gamma = self.focal_alpha, self.focal_gamma
        neg_cost = (1 - alpha) * prob**gamma * F.softplus(x)
        pos_cost = alpha * (1 - prob) ** gamma * F.softplus(-x)
        cost_class = pos_cost - neg_cost  # [B*P, T]

        # L1 cost between boxes, in cxcywh as the box loss is.
        cost_bbox = torch.cdist(out_boxes, tgt_boxes, p=1)  # [B*P, T]

        # GIoU cost, on xyxy; negated since a higher GIoU is a better match.
        cost_giou = -generalized_box_iou(
            box_convert(out_boxes, "cxcywh", "xyxy"), box_convert(tgt_boxes, "cxcywh", "xyxy")
        )  # [B*P, T]

        cost = self.cost_bbox * cost_bbox + self.cost_class * cost_class + self.cost_giou * cost_giou
        cost = cost.view(bs, num_regions, -1).cpu()  # [B, P, T]

        sizes = [len(t["labels"]) for t in targets]
        indices = []
        for i, block in enumerate(cost.split(sizes, -1)):
            own = block[i]  # [P, N_i]; cross-image columns may hold padded-query garbage, unused
            if not torch.isfinite(own).all():
                raise ValueError(
                    f"matching cost of image {i} has NaN/inf: outputs['logits'] or outputs['pred_boxes'] hold "
                    "non-finite values; check the model (e.g. a diverged learning rate)"
                )
            rows, cols = linear_sum_assignment(own.numpy())
            indices.append((torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64)))
        return indices
