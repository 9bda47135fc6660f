"""Encoding a collection's regions through Lightning's predict, as batch inference runs (devices, DDP, progress).

Images are decoded in DataLoader workers (`ovdet.inference.image_dataset`); an unreadable one is reported and
skipped, so the next `ovdet index` run tries it again.
"""

from __future__ import annotations

import lightning as L
from torch import nn
from torch.utils.data import DataLoader

from ovdet.errors import ImageLoadError
from ovdet.image_io import load_image, original_size
from ovdet.inference.image_dataset import ImageDataset, collate_images
from ovdet.search.region_encoder import encode_regions
from ovdet.search.region_index import CLASSIFIER_ARRAYS


class RegionImageDataset(ImageDataset):
    """`ImageDataset` whose sizes are the file's own (before any downscale on load): boxes are stored in the
    pixels `ovdet detect` reports them in."""

    def __getitem__(self, index: int) -> dict:
        entry = self.entries[index]
        try:
            image = load_image(self.root / entry["file_name"])
        except ImageLoadError as err:
            return {"image_id": entry["id"], "file_name": entry["file_name"], "error": str(err)}
        size = original_size(image)
        return {"pixel_values": self.preprocessor.to_tensor(image), "image_id": entry["id"], "size": size,
                "target_size": size}  # fmt: skip


class RegionIndexModule(L.LightningModule):
    """`predict_step`: a batch of images -> per image {id, width, height, embeds [K, E], arrays (boxes [K, 4]
    xyxy pixels, objectness, logit_scale, logit_bias, reference_lse [K])}, numpy, regions with no area in the image dropped.

    Args:
        detector: an `ovdet.models.detector.Detector`.
        regions: regions kept per image (top by objectness).
    """

    def __init__(self, detector: nn.Module, regions: int):
        super().__init__()
        self.detector = detector
        self.regions = regions
        self.skipped: list[dict] = []

    def predict_step(self, batch: dict, batch_idx: int) -> list[dict]:
        for item in batch.get("failed", []):  # the caller reports them, one line each
            self.skipped.append({"id": item["image_id"], "file_name": item["file_name"], "error": item["error"]})
        if batch["pixel_values"] is None:
            return []
        out = encode_regions(self.detector, batch["pixel_values"], self.regions)
        to_original = self.detector.preprocessor.to_original
        records = []
        for i, (image_id, size) in enumerate(zip(batch["image_ids"], batch["sizes"])):
            boxes = to_original(out["boxes"][i].clone(), size)  # [K, 4] pixels, clipped to the image
            # as PostProcess does: a region wholly in the padding is never a candidate
            keep = ((boxes[:, 2] - boxes[:, 0] >= 0.5) & (boxes[:, 3] - boxes[:, 1] >= 0.5)).cpu().numpy()
            arrays = {"boxes": boxes.cpu().numpy(), **{k: out[k][i].cpu().numpy() for k in
                                                       ("objectness", "logit_scale", "logit_bias", "reference_lse",
                                                        *CLASSIFIER_ARRAYS) if k in out}}  # fmt: skip
            records.append({"id": image_id, "width": size[0], "height": size[1],
                            "embeds": out["embeds"][i].cpu().numpy()[keep],
                            "arrays": {k: v[keep] for k, v in arrays.items()}})  # fmt: skip
        return records


def encode_collection(detector, paths: list[str], regions: int, batch_size: int = 8, workers: int = 0,
                      accelerator: str = "auto", devices: int | str = 1, progress: bool = True,
                      ) -> tuple[list[dict], list[dict]] | None:
    """Encode every image of `paths`; returns (records in `paths` order, skipped {id, file_name, error}),
    where a record's `id` is its position in `paths`. Several devices run DDP; rank 0 gathers, the other ranks
    get None (they must not write the index)."""
    from ovdet.inference.batch import _device_count, _gather, _quiet_lightning

    entries = [{"id": i, "file_name": p} for i, p in enumerate(paths)]  # absolute paths: the root "/" is ignored
    loader = DataLoader(RegionImageDataset(entries, "/", detector.preprocessor), batch_size=batch_size,
                        num_workers=workers, collate_fn=collate_images)  # fmt: skip
    module = RegionIndexModule(detector, regions)
    with _quiet_lightning():
        trainer = L.Trainer(accelerator=accelerator, devices=devices,
                            strategy="ddp" if _device_count(devices) > 1 else "auto", logger=False,
                            enable_checkpointing=False, enable_model_summary=False, enable_progress_bar=progress,
                            inference_mode=True)  # fmt: skip
        batches = trainer.predict(module, dataloaders=loader, return_predictions=True) or []
    records = [rec for batch in batches for rec in batch]
    skipped = module.skipped
    if trainer.world_size > 1:
        gathered = _gather([(records, skipped)], trainer.global_rank)
        if gathered is None:
            return None
        records = [rec for shard, _ in gathered for rec in shard]
        skipped = [s for _, shard in gathered for s in shard]
    unique = {rec["id"]: rec for rec in records}  # DDP's sampler pads the last shard with repeats
    return [unique[i] for i in sorted(unique)], sorted(skipped, key=lambda s: s["id"])

