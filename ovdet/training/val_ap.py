"""Open-vocabulary COCO AP during validation: collect detections per step, score once per epoch."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.distributed as dist
from torchvision.ops import box_convert

from ovdet.evaluation.coco_ov import evaluate_coco_ov
from ovdet.evaluation.splits import Split
from ovdet.postprocess import PostProcess

HEADLINE = ("AP50_novel", "AP50_base", "AP50_all", "AP")


class ValidationAP:
    """COCO results of the validation images, turned into `evaluate_coco_ov` metrics.

    Args:
        score_threshold / nms / max_detections: postprocess for AP (a low threshold: AP wants the
            whole precision-recall curve).
    """

    def __init__(self, score_threshold: float = 0.001, nms: float | None = 0.5, max_detections: int = 100):
        self.post = PostProcess(score_threshold=score_threshold, nms_threshold=nms, max_detections=max_detections)
        self.max_detections = max_detections
        self.reset()

    def reset(self) -> None:
        self.by_image: dict[int, list[dict]] = {}  # image id -> its COCO results

    @torch.no_grad()
    def update(self, outputs: dict[str, torch.Tensor], batch: dict) -> None:
        """outputs: the detector's dict for the batch; batch: `collate_detection`'s dict."""
        for dets, image_id, cat_ids in zip(
            self.post(outputs, batch["orig_sizes"]), batch["image_ids"], batch["query_category_ids"]
        ):
            xywh = box_convert(dets["boxes"], "xyxy", "xywh")  # [K, 4] original pixels
            self.by_image[int(image_id)] = [
                {"image_id": int(image_id), "category_id": cat_ids[label], "bbox": [round(v, 2) for v in box],
                 "score": round(score, 5)}
                for box, score, label in zip(xywh.tolist(), dets["scores"].tolist(), dets["labels"].tolist())
            ]

    def compute(self, ground_truth: Callable[[Sequence[int]], dict], split: Split | None) -> dict[str, float]:
        """Metrics over the images every process saw; `ground_truth(image_ids)` gives their COCO dict."""
        by_image = _gather(self.by_image)
        if not by_image:
            return {}
        results = [r for image_id in sorted(by_image) for r in by_image[image_id]]
        metrics = evaluate_coco_ov(ground_truth(sorted(by_image)), results, split, max_dets=self.max_detections)
        return {name: float(metrics[name]) for name in HEADLINE}


def _gather(by_image: dict[int, list]) -> dict[int, list]:
    """Merge the per-image results of every process (DDP). The distributed sampler pads the last
    batches by repeating images: each image counts once, or its detections would double as false positives."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return by_image
    parts: list = [None] * dist.get_world_size()
    dist.all_gather_object(parts, by_image)
    merged: dict[int, list] = {}
    for part in parts:
        for image_id, results in part.items():
            merged.setdefault(image_id, results)
    return merged
