"""A LightningModule whose `predict_step` turns a batch of images into COCO results records."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import lightning as L
from torch import nn

from ovdet.errors import OvdetWarning
from ovdet.inference.coco_results import to_coco_results
from ovdet.postprocess import PostProcess


class CocoPredictModule(L.LightningModule):
    """Run a detector over a fixed vocabulary; Lightning brings devices, DDP and the progress bar.

    Args:
        detector: an `ovdet.models.detector.Detector`, or anything with its
            `predict(pixel_values, queries, templates, template_mode)` and output contract.
        queries: the vocabulary, one text per category.
        cat_ids: the category id of each query.
        postprocess: ranks every (region, query) pair of an image and keeps the best `max_detections`.
        templates / template_mode: prompt templates and how they are averaged (see `Detector.predict`).

    Images that could not be read are skipped with one `OvdetWarning` each and listed in `skipped`
    (`{"id", "file_name", "error"}`); the others go on.
    """

    def __init__(
        self,
        detector: nn.Module,
        queries: Sequence[str],
        cat_ids: Sequence[int],
        postprocess: PostProcess,
        templates=None,
        template_mode: str = "embed",
    ):
        super().__init__()
        if len(queries) != len(cat_ids):
            raise ValueError(f"{len(queries)} queries but {len(cat_ids)} category ids; give one id per query")
        self.detector = detector
        self.queries = list(queries)
        self.cat_ids = [int(c) for c in cat_ids]
        self.postprocess = postprocess
        self.templates = templates
        self.template_mode = template_mode
        self.skipped: list[dict] = []

    def predict_step(self, batch: dict, batch_idx: int) -> list[dict]:
        for item in batch.get("failed", []):
            warnings.warn(f"skipped image {item['image_id']}: {item['error']}", OvdetWarning, stacklevel=2)
            self.skipped.append({"id": item["image_id"], "file_name": item["file_name"], "error": item["error"]})
        if batch["pixel_values"] is None:
            return []
        out = self.detector.predict(batch["pixel_values"], self.queries, self.templates, self.template_mode)
        records = []
        for dets, image_id, size, target in zip(
            self.postprocess(out, batch["sizes"]), batch["image_ids"], batch["sizes"], batch["target_sizes"]
        ):
            scale = (target[0] / size[0], target[1] / size[1])
            records += to_coco_results(dets["boxes"], dets["scores"], dets["labels"], image_id, self.cat_ids, scale)
        return records
