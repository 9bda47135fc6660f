"""Unlabelled images for the dense-distillation stage: every image of a folder, or ShapeWorld scenes.

Batches are what `DenseDistillModule` takes: `pixel_values` [B, 3, S, S] (resized, padded bottom/right,
normalised with the tower's mean/std by `ImagePreprocessor`) and `image_hw` [B, 2], the un-padded image
in input pixels, so the random boxes never cover padding.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from ovdet.errors import OvdetError
from ovdet.image_io import load_image
from ovdet.inference.image_dataset import IMAGE_SUFFIXES, images_from_folder
from ovdet.preprocess import ImagePreprocessor


def check_image_folder(images: str | Path) -> Path:
    """A folder holding at least one image file, or one line naming `data.images` and the fix."""
    root = Path(images)
    if not root.is_dir():
        raise OvdetError(f"data.images='{root}' is not a folder; name a folder of images (jpg, png, ...) "
                         "or leave data.images unset to distil on ShapeWorld scenes")
    if not any(p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES for p in root.rglob("*")):
        raise OvdetError(f"data.images='{root}' holds no images ({', '.join(IMAGE_SUFFIXES)}); "
                         "name a folder that does")
    return root


def _item(image: Image.Image, preprocessor: ImagePreprocessor) -> dict:
    width, height = image.size
    scale = preprocessor.image_size / max(width, height)
    return {"pixel_values": preprocessor.to_tensor(image),  # [3, S, S]
            "image_hw": torch.tensor([height * scale, width * scale])}  # [2]


class FolderImages(Dataset):
    """Every decodable image under a folder (sorted file names)."""

    def __init__(self, images: str | Path, preprocessor: ImagePreprocessor):
        self.root = check_image_folder(images)
        self.files = [e["file_name"] for e in images_from_folder(self.root)]
        self.preprocessor = preprocessor

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict:
        return _item(load_image(self.root / self.files[index]), self.preprocessor)


class ShapeWorldImages(Dataset):
    """ShapeWorld scenes seeds first_seed .. first_seed + num_images - 1, rendered when asked (no files)."""

    def __init__(self, num_images: int, first_seed: int, preprocessor: ImagePreprocessor):
        self.num_images, self.first_seed, self.preprocessor = num_images, first_seed, preprocessor

    def __len__(self) -> int:
        return self.num_images

    def __getitem__(self, index: int) -> dict:
        from ovdet.data.shapeworld import render_scene

        image, _ = render_scene(self.first_seed + index)
        return _item(image, self.preprocessor)


class ImageFolderDataModule(L.LightningDataModule):
    """Training images only (no labels, no validation set).

    Args:
        images: a folder of images; None renders `num_scenes` ShapeWorld scenes from `seed` instead.
        image_size / image_mean / image_std: filled in by `ovdet train` from the tower (`DistillTower`).
        batch_size / num_workers: DataLoader settings.
        num_scenes / seed: the ShapeWorld scenes used when `images` is None.
    """

    def __init__(self, images: str | None = None, image_size: int = 256, image_mean: list[float] | None = None,
                 image_std: list[float] | None = None, batch_size: int = 8, num_workers: int = 0,
                 num_scenes: int = 512, seed: int = 0):
        super().__init__()
        if images is not None:
            check_image_folder(images)
        if batch_size < 1:
            raise OvdetError(f"data.batch_size={batch_size}; give an integer >= 1")
        self.images, self.image_size = images, image_size
        self.batch_size, self.num_workers = batch_size, num_workers
        self.num_scenes, self.seed = num_scenes, seed
        self.preprocessor = ImagePreprocessor(image_size, image_mean or (0.5, 0.5, 0.5), image_std or (0.5, 0.5, 0.5))

    def setup(self, stage: str | None = None) -> None:
        if self.images is not None:
            self.train_set: Dataset = FolderImages(self.images, self.preprocessor)
        else:
            self.train_set = ShapeWorldImages(self.num_scenes, self.seed, self.preprocessor)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True, num_workers=self.num_workers,
                          drop_last=False, persistent_workers=self.num_workers > 0)
