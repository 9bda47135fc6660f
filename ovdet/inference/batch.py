"""Batch inference to COCO results: one Lightning `predict` path for CPU, one GPU and DDP."""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from ovdet.inference.coco_results import sort_results
from ovdet.inference.image_dataset import ImageDataset, collate_images
from ovdet.inference.predict_module import CocoPredictModule
from ovdet.postprocess import PostProcess


def predict_coco(
    detector,
    images: Sequence[dict],
    images_dir: str | Path,
    categories: Sequence[dict],
    *,
    batch_size: int = 8,
    workers: int = 2,
    max_dets: int = 300,
    score_threshold: float = 0.0,
    nms: float | None = 0.5,
    templates=None,
    template_mode: str = "embed",
    accelerator: str = "auto",
    devices: int | str | list[int] = 1,
    progress: bool = True,
    skipped: list[dict] | None = None,
) -> list[dict] | None:
    """Run `detector` on every image with all category names as the vocabulary; return COCO results.

    images: COCO `images` entries (id, file_name, width, height); see `images_from_coco` / `images_from_folder`.
    categories: COCO categories; each `name` is a query, its `id` the result's category_id.
    max_dets: (box, category) pairs kept per image, ranked over all pairs, so several categories
        may share one box (OWL-ViT / LVIS protocol: 300).
    score_threshold: 0 keeps the full ranking, as AP wants.
    nms: IoU of per-category NMS, 0.5 as in `ovdet detect`, so AP measures what users get; None
        keeps every pair. A head trained with Hungarian matching alone emits few duplicates, but
        crop re-scoring lifts its low-objectness near-copies of a found object (ShapeWorld, 200
        tuning images: AP50 novel / base 50.4 / 59.3 without NMS, 63.1 / 76.5 with 0.5).
    accelerator / devices: Lightning's; several devices run DDP, each rank predicts its shard
        and rank 0 gathers them (`torch.distributed.gather_object`): no shared disk needed.
    workers: DataLoader processes that decode and preprocess images (0: in the main process).
    skipped: a list that receives `{"id", "file_name", "error"}` of each image that could not be read
        (each is also one `OvdetWarning`); the run goes on without it, so it has no detections.

    Returns the records sorted by image then score, on rank 0; None on the other ranks.
    """
    _check(batch_size, workers, max_dets, categories)
    post = PostProcess(
        score_threshold=score_threshold, nms_threshold=nms, max_detections=max_dets,
        topk_candidates=max(1000, 4 * max_dets),  # room for pairs dropped in the padding or by NMS
    )  # fmt: skip
    module = CocoPredictModule(
        detector, [c["name"] for c in categories], [c["id"] for c in categories], post, templates, template_mode
    )
    loader = DataLoader(
        ImageDataset(images, images_dir, detector.preprocessor),
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=collate_images,
        persistent_workers=False,
    )
    with _quiet_lightning():
        trainer = L.Trainer(
            accelerator=accelerator,
            devices=devices,
            strategy="ddp" if _device_count(devices) > 1 else "auto",
            logger=False,
            enable_checkpointing=False,
            enable_model_summary=False,
            enable_progress_bar=progress,
            inference_mode=True,
        )
        batches = trainer.predict(module, dataloaders=loader, return_predictions=True) or []
    records = [rec for batch in batches for rec in batch]
    failed = module.skipped
    if trainer.world_size > 1:
        # One collective for both: a second gather_object made a worker rank abort at exit (gloo, 2 of 3 runs)
        gathered = _gather([(records, failed)], trainer.global_rank)
        if gathered is None:
            return None
        records = [rec for shard, _ in gathered for rec in shard]
        failed = [f for _, shard in gathered for f in shard]
    if skipped is not None:
        skipped += sorted(failed, key=lambda f: f["id"])
    return sort_results(records, [img["id"] for img in images])


def _gather(items: list, rank: int) -> list | None:
    """Every rank's items on rank 0 (each rank predicted a disjoint shard of the images)."""
    shards = [None] * dist.get_world_size() if rank == 0 else None
    dist.gather_object(items, shards, dst=0)
    dist.barrier()  # no rank leaves (and tears its gloo threads down) while another is still in the gather
    return [item for shard in shards for item in shard] if rank == 0 else None


def _device_count(devices) -> int:
    if isinstance(devices, (list, tuple)):
        return len(devices)
    if devices == -1 or devices == "-1":
        return max(torch.cuda.device_count(), 1)
    if isinstance(devices, str) and "," in devices:
        return len([d for d in devices.split(",") if d.strip()])
    try:
        return int(devices)
    except (TypeError, ValueError):
        return 1  # "auto": Lightning decides, one device on CPU


def _check(batch_size: int, workers: int, max_dets: int, categories: Sequence[dict]) -> None:
    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {batch_size}")
    if workers < 0:
        raise ValueError(f"workers must be >= 0, got {workers}")
    if max_dets < 1:
        raise ValueError(f"max_dets must be >= 1, got {max_dets}")
    if not categories:
        raise ValueError("no categories: the vocabulary is the categories' names; pass a json with 'categories'")
    names = [c["name"] for c in categories]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"category names must be unique to serve as queries, repeated: {dupes}")


@contextlib.contextmanager
def _quiet_lightning():
    """Lightning logs device and tip banners at INFO for every Trainer; keep its warnings only, here.

    Also mutes one warning Lightning 2.6 raises under newer torch about its own pytree use
    (`isinstance(treespec, LeafSpec)`): nothing a user can act on.
    """
    loggers = [logging.getLogger(n) for n in ("lightning.pytorch", "lightning.fabric")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
