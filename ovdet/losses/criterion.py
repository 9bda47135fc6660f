"""Set-prediction losses for the detection head, computed after Hungarian matching (DETR)."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torchvision.ops import box_convert, generalized_box_iou_loss, sigmoid_focal_loss

from ovdet.losses.matcher import HungarianMatcher

LOSS_NAMES = ("loss_cls", "loss_bbox", "loss_giou", "loss_obj")
DEFAULT_WEIGHTS = {"loss_cls": 2.0, "loss_bbox": 5.0, "loss_giou": 2.0, "loss_obj": 1.0}


class SetCriterion(nn.Module):
    """Named, unweighted losses of matched regions; `weighted_total` applies `weight_dict`.

    - loss_cls: sigmoid focal loss of every region x real query logit against a one-hot
      target (matched region -> its target's query; unmatched regions are all-zero
      background). Padded queries (query_mask False) are left out.
    - loss_bbox: L1 on cxcywh of matched regions.
    - loss_giou: 1 - GIoU of matched regions.
    - loss_obj: objectness from the matching (matched = 1, others = 0). Sigmoid focal loss
      rather than BCE: a few positives among hundreds of patch regions would let BCE be
      dominated by easy background, the same reason loss_cls is focal.

    Each loss is summed and divided by the number of target boxes (averaged over processes
    when torch.distributed is initialised, as in DETR), clamped to >= 1.
    """

    def __init__(
        self,
        matcher: HungarianMatcher,
        weight_dict: dict[str, float] | None = None,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
    ) -> None:
        super().__init__()
        weight_dict = dict(DEFAULT_WEIGHTS if weight_dict is None else weight_dict)
        if not weight_dict:
            raise ValueError("weight_dict is empty; weight at least one of " + ", ".join(LOSS_NAMES))
        unknown = set(weight_dict) - set(LOSS_NAMES)
        if unknown:
            raise ValueError(f"weight_dict has unknown losses {sorted(unknown)}; known: {list(LOSS_NAMES)}")
        self.matcher = matcher
        self.weight_dict = weight_dict
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma

    def forward(
        self,
        outputs: dict[str, Tensor],
        targets: list[dict[str, Tensor]],
        return_indices: bool = False,
    ) -> dict[str, Tensor] | tuple[dict[str, Tensor], list[tuple[Tensor, Tensor]]]:
        """Match, then compute the losses.

        Args:
            outputs: "logits" [B, P, Q], "pred_boxes" [B, P, 4] cxcywh 0..1, "objectness"
                [B, P] logits, optional "query_mask" [B, Q] bool (True = real query).
            targets: B dicts of "labels" int64 [N] (query index) and "boxes_cxcywh" [N, 4].
            return_indices: also return the matcher's per-image (pred_idx, tgt_idx).

        Returns:
            {"loss_cls", "loss_bbox", "loss_giou", "loss_obj"}: scalar tensors, unweighted;
            with return_indices, a tuple (losses, indices).
        """
        if "objectness" not in outputs:
            raise ValueError("outputs has no 'objectness' [B, P]; the criterion trains it from the matching")
        indices = self.matcher(outputs, targets)
        device = outputs["logits"].device
        num_boxes = self._num_boxes(targets, device)

        batch_idx = torch.cat([torch.full_like(src, i) for i, (src, _) in enumerate(indices)]).to(device)  # [M]
        src_idx = torch.cat([src for src, _ in indices]).to(device)  # [M]
        tgt_labels = torch.cat([t["labels"][j] for t, (_, j) in zip(targets, indices)]).to(device)  # [M]
        tgt_boxes = torch.cat([t["boxes_cxcywh"][j] for t, (_, j) in zip(targets, indices)]).to(device)  # [M, 4]

        losses = {
            "loss_cls": self._loss_cls(outputs, batch_idx, src_idx, tgt_labels) / num_boxes,
            "loss_obj": self._loss_obj(outputs, batch_idx, src_idx) / num_boxes,
        }
        # Losses in float32: focal terms and GIoU are imprecise in bf16/fp16 autocast.
        src_boxes = outputs["pred_boxes"][batch_idx, src_idx].float()  # [M, 4]
        tgt_boxes = tgt_boxes.float()
        losses["loss_bbox"] = (src_boxes - tgt_boxes).abs().sum() / num_boxes
        losses["loss_giou"] = (
            generalized_box_iou_loss(
                box_convert(src_boxes, "cxcywh", "xyxy"), box_convert(tgt_boxes, "cxcywh", "xyxy"), reduction="sum"
            )
            / num_boxes
        )
        losses = {name: losses[name] for name in LOSS_NAMES}
        return (losses, indices) if return_indices else losses

    def weighted_total(self, losses: dict[str, Tensor]) -> Tensor:
        """Sum of `weight_dict[name] * losses[name]`, the scalar to backpropagate."""
        missing = set(self.weight_dict) - set(losses)
        if missing:
            raise ValueError(f"losses lack {sorted(missing)} that weight_dict weights; pass forward()'s output")
        return sum(weight * losses[name] for name, weight in self.weight_dict.items())

    def _loss_cls(self, outputs: dict[str, Tensor], batch_idx: Tensor, src_idx: Tensor, tgt_labels: Tensor) -> Tensor:
        """Summed focal loss over regions x real queries; padded queries are dropped, not zeroed,
        so that garbage (even non-finite) logits there cannot reach the loss or its gradient."""
        logits = outputs["logits"].float()  # [B, P, Q]
        onehot = torch.zeros_like(logits)  # [B, P, Q]
        onehot[batch_idx, src_idx, tgt_labels] = 1.0
        query_mask = outputs.get("query_mask")
        if query_mask is not None:
            valid = query_mask[:, None, :].expand_as(logits)  # [B, P, Q]
            logits, onehot = logits[valid], onehot[valid]  # [V]
        return sigmoid_focal_loss(logits, onehot, self.focal_alpha, self.focal_gamma, reduction="sum")

    def _loss_obj(self, outputs: dict[str, Tensor], batch_idx: Tensor, src_idx: Tensor) -> Tensor:
        """Summed focal loss of objectness against the matching: matched regions 1, others 0."""
        objectness = outputs["objectness"].float()  # [B, P]
        target = torch.zeros_like(objectness)  # [B, P]
        target[batch_idx, src_idx] = 1.0
        return sigmoid_focal_loss(objectness, target, self.focal_alpha, self.focal_gamma, reduction="sum")

    @staticmethod
    def _num_boxes(targets: list[dict[str, Tensor]], device: torch.device) -> float:
        """Target boxes per process, averaged over processes as DETR does, clamped to >= 1."""
        num = torch.tensor(float(sum(len(t["labels"]) for t in targets)), device=device)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(num)
            num = num / dist.get_world_size()
        return num.clamp(min=1).item()
