"""Object-like boxes for the dense-distillation stage, with no labels: a detector's class-agnostic proposals.

CLIPSelf distils on random grid cells or on region proposals of a detector trained on base classes; the
proposals help because detection later pools object boxes, not grid cells. Measured on ShapeWorld (docs/
RESULTS.md section 5), the proposals of a head trained on the 12 base shapes lift box-pooled accuracy of all
16 names far above random boxes, novel shapes included: objectness generalises, names are never used.
"""

from __future__ import annotations

import torch
from torchvision.ops import batched_nms, box_convert

from ovdet.errors import OvdetError

PROPOSAL_QUERY = "object"  # the head needs one query to run; its class logits are never read


class DetectorProposals:
    """Up to `max_boxes` boxes per image, the detector's regions by objectness, after NMS.

    Args:
        model: an ovdet detector folder (e.g. a head trained on base names), loaded with its own CLIP.
        image_size / image_mean / image_std: the stage's input; the detector must preprocess the same way,
            so its boxes fall on the objects of the stage's pixels.
        threshold: objectness probability a region needs.
        max_boxes: boxes kept per image.
        nms_iou: IoU above which a lower-objectness box is dropped.
    """

    def __init__(self, model: str, image_size: int, image_mean, image_std, threshold: float = 0.3,
                 max_boxes: int = 8, nms_iou: float = 0.5):
        from ovdet.models.detector import Detector

        if not 0.0 <= threshold < 1.0 or max_boxes < 1 or not 0.0 < nms_iou <= 1.0:
            raise OvdetError(f"module.proposal_threshold={threshold}, module.max_proposals={max_boxes}, "
                             f"nms {nms_iou}: use a threshold in [0, 1), 1 or more boxes and an IoU in (0, 1]")
        detector = Detector.from_pretrained(model).eval().requires_grad_(False)
        mine = (image_size, tuple(round(v, 6) for v in image_mean), tuple(round(v, 6) for v in image_std))
        theirs = (detector.image_size, tuple(round(v, 6) for v in detector.backbone.image_mean),
                  tuple(round(v, 6) for v in detector.backbone.image_std))
        if mine != theirs:
            raise OvdetError(f"module.proposals='{model}' reads images as (size, mean, std) {theirs}, the stage "
                             f"as {mine}; use a detector on the same CLIP at model.image_size={detector.image_size}")
        detector.set_rescore(None)
        detector.set_region_scoring(None)
        self.detector = detector
        self.query = detector.encode_queries([PROPOSAL_QUERY])  # [1, E]
        self.threshold, self.max_boxes, self.nms_iou = threshold, max_boxes, nms_iou

    @torch.no_grad()
    def __call__(self, pixel_values: torch.Tensor) -> list[torch.Tensor]:
        """[B, 3, S, S] normalised -> B tensors [K_i, 4] xyxy in input pixels, K_i in 0..max_boxes."""
        self.detector.to(pixel_values.device)
        out = self.detector(pixel_values, self.query.to(pixel_values.device))
        side = pixel_values.shape[-1]
        boxes = box_convert(out["pred_boxes"], "cxcywh", "xyxy") * side  # [B, P, 4]
        scores = out["objectness"].sigmoid()  # [B, P]
        picked = []
        for image_boxes, image_scores in zip(boxes, scores):
            keep = image_scores > self.threshold  # [P]
            b, s = image_boxes[keep], image_scores[keep]
            order = batched_nms(b, s, torch.zeros_like(s, dtype=torch.long), self.nms_iou)[: self.max_boxes]
            picked.append(b[order].clamp(0, side))  # [K_i, 4]
        return picked
