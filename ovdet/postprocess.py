"""Model outputs -> detections in original pixels: threshold, top-k, NMS, rescale."""

from __future__ import annotations

import torch

from ovdet.box_ops import batched_nms, box_convert, nms, remove_small_boxes
from ovdet.option_values import check_count, check_iou, check_score


class PostProcess:
    """Turn `logits` and `pred_boxes` into per-image `{"boxes", "scores", "labels", "regions"}`.

    Every (region, query) pair is a candidate, ranked over all pairs (as OWL-ViT and LVIS do),
    so one box may carry several queries.

    Args:
        score_threshold: keep pairs with sigmoid score >= this.
        nms_threshold: IoU for NMS; None turns NMS off.
        max_detections: detections kept per image after NMS.
        topk_candidates: pairs kept before NMS (bounds the NMS cost).
        class_agnostic: NMS across queries instead of per query.
        hf_compatible: reproduce transformers' `post_process_object_detection`: one label per region
            (the best query), strict `score > threshold`, no NMS, no top-k, boxes not clipped and
            regions in the padding kept.
        one_label_per_region: with hf_compatible, False keeps every (region, query) pair as the
            `zero-shot-object-detection` pipeline does (it post-processes each query on its own).
        query_thresholds: a minimum score per query (`ovdet label -q car:0.3`), applied with
            `score_threshold` before NMS, so that a box under its own query's threshold never suppresses
            another; queries past the list's end (exemplars) keep `score_threshold`.
    """

    def __init__(
        self,
        score_threshold: float = 0.1,
        nms_threshold: float | None = 0.5,
        max_detections: int = 100,
        topk_candidates: int = 1000,
        class_agnostic: bool = False,
        hf_compatible: bool = False,
        one_label_per_region: bool = True,
        query_thresholds: list[float] | None = None,
    ):
        self.score_threshold = check_score("score_threshold", score_threshold)
        self.nms_threshold = None if nms_threshold is None else check_iou("nms_threshold", nms_threshold)
        self.max_detections = check_count("max_detections", max_detections)
        self.topk_candidates = check_count("topk_candidates", topk_candidates)
        self.class_agnostic = class_agnostic
        self.hf_compatible = hf_compatible
        self.one_label_per_region = one_label_per_region
        self.query_thresholds = [check_score("query threshold", t) for t in query_thresholds or []]
        if self.query_thresholds and hf_compatible:
            raise ValueError("per-query thresholds need ovdet's postprocessing, not transformers' (hf_compatible)")

    @torch.no_grad()
    def __call__(self, outputs: dict[str, torch.Tensor], sizes: list[tuple[int, int]], to_original=None,
                 ) -> list[dict[str, torch.Tensor]]:
        """Args:
            outputs: `logits` [B, P, Q], `pred_boxes` [B, P, 4] cxcywh in 0..1 of the model input.
            sizes: B original (width, height).
            to_original: (boxes [K, 4] xyxy 0..1, size, clip) -> pixels, the preprocessor's inverse
                (`ImagePreprocessor.to_original`); None: resize-and-pad geometry.
        Returns:
            B dicts: `boxes` [K, 4] xyxy pixels, `scores` [K], `labels` [K] query index, `regions` [K]
            the region (index into P) each detection came from.
        """
        logits = outputs["logits"].float()  # [B, P, Q]
        boxes = box_convert(outputs["pred_boxes"].float(), "cxcywh", "xyxy")  # [B, P, 4]
        if to_original is None:
            from ovdet.preprocess import ImagePreprocessor

            to_original = ImagePreprocessor(1).to_original
        if self.hf_compatible:  # the label is chosen on logits, as transformers does
            return [self._hf(l, b, size, to_original) for l, b, size in zip(logits, boxes, sizes)]
        return [self._one(l.sigmoid(), b, size, to_original) for l, b, size in zip(logits, boxes, sizes)]

    def _hf(self, logits: torch.Tensor, boxes: torch.Tensor, size: tuple[int, int], to_original) -> dict[str, torch.Tensor]:
        num_queries = logits.shape[1]
        if self.one_label_per_region:
            # argmax of the logits, then the sigmoid (transformers' order): above a logit of ~16.6 the float32
            # sigmoids of different queries all round to 1.0 and an argmax over them would pick another label.
            best_logit, label = logits.max(dim=-1)  # [P]: one label per region
            best = best_logit.sigmoid()  # [P]
            region = torch.arange(len(best), device=best.device)
        else:
            best = logits.sigmoid().flatten()  # [P*Q]: every pair
            pair = torch.arange(len(best), device=best.device)
            region, label = pair // num_queries, pair % num_queries
        keep = torch.nonzero(best > self.score_threshold).squeeze(1)
        keep = keep[best[keep].argsort(descending=True, stable=True)][: self.max_detections]
        pixels = to_original(boxes[region[keep]].clone(), size, clip=False)
        return {"boxes": pixels.cpu(), "scores": best[keep].cpu(), "labels": label[keep].cpu(), "regions": region[keep].cpu()}

    def _thresholds(self, num_queries: int, device) -> torch.Tensor:
        """[Q] minimum score of each query: its own (`query_thresholds`), else `score_threshold`."""
        own = self.query_thresholds[:num_queries]
        rest = [self.score_threshold] * (num_queries - len(own))
        return torch.tensor(own + rest, dtype=torch.float32, device=device)

    def _one(self, scores: torch.Tensor, boxes: torch.Tensor, size: tuple[int, int], to_original) -> dict[str, torch.Tensor]:
        num_queries = scores.shape[1]
        region_boxes = to_original(boxes.clone(), size)  # [P, 4]
        # Regions wholly in the padding (or NaN, or inverted) have no area once clipped: never candidates,
        # so that with a large vocabulary they cannot fill the top-k and crowd out the real ones.
        valid = torch.zeros(len(region_boxes), dtype=torch.bool, device=scores.device)
        valid[remove_small_boxes(region_boxes, 0.5)] = True
        flat = scores.masked_fill(~valid[:, None], -1.0).flatten()  # [P*Q]; NaN scores fail the threshold below
        keep = torch.nonzero(flat >= self._thresholds(num_queries, scores.device).repeat(len(scores))).squeeze(1)
        if keep.numel() > self.topk_candidates:
            keep = keep[flat[keep].topk(self.topk_candidates).indices]
        region, label = keep // num_queries, keep % num_queries
        det_scores, det_boxes = flat[keep], region_boxes[region]
        if self.nms_threshold is not None and keep.numel():
            if self.class_agnostic:
                kept = nms(det_boxes, det_scores, self.nms_threshold)
            else:
                kept = batched_nms(det_boxes, det_scores, label, self.nms_threshold)
        else:
            kept = det_scores.argsort(descending=True)
        kept = kept[: self.max_detections]
        return {
            "boxes": det_boxes[kept].cpu(),
            "scores": det_scores[kept].cpu(),
            "labels": label[kept].cpu(),
            "regions": region[kept].cpu(),
        }
