"""LightningDataModule over COCO-format train/val sets: base boxes for training, all for validation."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, get_worker_info

from ovdet.data.coco_detection import CocoDetection
from ovdet.data.collate import collate_detection
from ovdet.data.transforms import Augmentation, build_transform
from ovdet.preprocess import OPENAI_MEAN, OPENAI_STD


class CocoDataModule(L.LightningDataModule):
    """Train on base boxes with per-image sampled vocabularies; validate with every evaluated name.

    `image_size`, `image_mean` and `image_std` must match the detector; the training entry
    point passes the built detector's own values.

    Args:
        train_json / train_images: training annotations and the image folder.
        val_json / val_images: validation set (optional), annotated with base and novel boxes.
        split / base_names / keep_negatives: the category filter, see `CocoDetection`.
        image_size, image_mean, image_std: the detector's square input and normalisation.
        augmentation: training augmentation; None trains on resized, padded images only.
        max_queries: per-image training vocabulary size (OWL-ViT samples up to 50).
        train_templates: prompt template set drawn per training query.
        batch_size / val_batch_size: images per batch (val defaults to batch_size).
        num_workers / pin_memory: DataLoader settings.
        seed: seed of the main process's sampling; workers reseed from torch's per-worker seed.
    """

    def __init__(
        self,
        train_json: str | Path,
        train_images: str | Path,
        val_json: str | Path | None = None,
        val_images: str | Path | None = None,
        split: str | Sequence[str] | None = None,
        base_names: Sequence[str] | None = None,
        keep_negatives: bool = False,
        image_size: int = 768,
        image_mean: Sequence[float] = OPENAI_MEAN,
        image_std: Sequence[float] = OPENAI_STD,
        augmentation: Augmentation | None = None,
        max_queries: int = 50,
        train_templates: str | Sequence[str] = "clip80",
        batch_size: int = 8,
        val_batch_size: int | None = None,
        num_workers: int = 4,
        pin_memory: bool = True,
        seed: int = 0,
    ):
        super().__init__()
        if batch_size < 1 or (val_batch_size is not None and val_batch_size < 1):
            raise ValueError(f"batch sizes must be >= 1, got batch_size={batch_size}, val_batch_size={val_batch_size}")
        if (val_json is None) != (val_images is None):
            raise ValueError("give both val_json and val_images, or neither")
        self.train_json, self.train_images = train_json, train_images
        self.val_json, self.val_images = val_json, val_images
        self.split, self.base_names, self.keep_negatives = split, base_names, keep_negatives
        self.image_size, self.image_mean, self.image_std = int(image_size), tuple(image_mean), tuple(image_std)
        self.augmentation = augmentation
        self.max_queries, self.train_templates = max_queries, train_templates
        self.batch_size = batch_size
        self.val_batch_size = val_batch_size or batch_size
        self.num_workers, self.pin_memory = num_workers, pin_memory
        self.seed = seed
        self.train_set: CocoDetection | None = None
        self.val_set: CocoDetection | None = None

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit") and self.train_set is None:
            self.train_set = CocoDetection(
                self.train_json,
                self.train_images,
                build_transform(self.image_size, self.image_mean, self.image_std, self.augmentation),
                split=self.split,
                base_names=self.base_names,
                categories="base",
                keep_negatives=self.keep_negatives,
                max_queries=self.max_queries,
                templates=self.train_templates,
                seed=self.seed,
            )
        if stage in (None, "fit", "validate") and self.val_set is None and self.val_json is not None:
            self.val_set = CocoDetection(
                self.val_json,
                self.val_images,
                build_transform(self.image_size, self.image_mean, self.image_std),
                split=self.split,
                base_names=self.base_names,
                categories="all",
                keep_negatives=True,  # every validation image counts in AP
                max_queries=None,
                seed=self.seed,
            )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader | list:
        if self.val_set is None:
            return []  # Lightning skips validation
        return self._loader(self.val_set, self.val_batch_size, shuffle=False)

    def _loader(self, dataset: CocoDetection | None, batch_size: int, shuffle: bool) -> DataLoader:
        if dataset is None:
            raise RuntimeError("call setup() before asking for a dataloader")
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            collate_fn=collate_detection,
            pin_memory=self.pin_memory and torch.cuda.is_available(),
            persistent_workers=self.num_workers > 0,
            worker_init_fn=seed_worker,
            drop_last=False,
        )


def seed_worker(worker_id: int) -> None:
    """Each worker draws its own augmentations and vocabularies: albumentations keeps its own RNG,
    which a forked worker would otherwise copy from the parent (every worker alike)."""
    info = get_worker_info()
    info.dataset.reseed(info.seed % 2**32)
