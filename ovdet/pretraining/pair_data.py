"""ShapeWorld image-text pairs for Lightning: a training set of pairs and a zero-shot evaluation set of crops."""

from __future__ import annotations

import re
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ovdet.data.shapeworld_captions import with_article
from ovdet.towers.open_clip_io import open_clip_tokenizer
from ovdet.pretraining.pair_pool import PairPool, PoolSpec, cached_pool
from ovdet.pretraining.positive_pairs import positive_pairs
from ovdet.pretraining.zero_shot import ZeroShotTask

BARE_TEMPLATES = ("{}", "a photo of {}", "an image of {}", "a drawing of {}", "{} shape")


class ImageTextPairs(Dataset):
    """Item i: (pixels uint8 [S, S, 3], one of its texts drawn at random).

    Crops are also turned by a random multiple of 90 degrees and mirrored: a star is a star
    either way, and the pool looks eight times larger. Scenes are left alone, since their
    captions say "left", "right", "above". Crop phrases get a final period with probability
    `period` (the generator writes none, the prompt "a photo of a {}." has one: without this the
    period alone halved zero-shot accuracy, 20 % vs 41 %), and are replaced with probability
    `bare` by a phrase naming the shape only ("a photo of a star"): colour words otherwise carry
    most of the contrast in a batch, and shape comes slower (35 % vs 27 % after 400 steps with
    bare=0.3 vs 0). Any text has "an" turned into "a"
    with probability `article`, as in careless web captions: the generator always writes
    "an ellipse", the prompt "a photo of a {}." says "a ellipse".
    """

    def __init__(
        self, pool: PairPool, augment: bool = True, period: float = 0.5, bare: float = 0.0, article: float = 0.0
    ):
        self.pool = pool
        self.augment = augment
        self.period, self.bare, self.article = period, bare, article

    def __len__(self) -> int:
        return len(self.pool)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, str, dict | None]:
        pixels = self.pool.images[index]  # [S, S, 3]
        texts = self.pool.texts[index]
        text = texts[int(torch.randint(len(texts), ()))]
        attributes = self.pool.attributes[index]
        if attributes is not None:
            if self._chance(self.bare):
                template = BARE_TEMPLATES[int(torch.randint(len(BARE_TEMPLATES), ()))]
                text = template.format(with_article(attributes["shape"]))
            if self._chance(self.period):
                text += "."
            if self.augment:
                k, flip = int(torch.randint(4, ())), bool(torch.randint(2, ()))
                pixels = np.rot90(pixels, k)
                pixels = pixels[:, ::-1] if flip else pixels
        if self._chance(self.article):
            text = re.sub(r"\ban\b", "a", text)
        return torch.from_numpy(np.ascontiguousarray(pixels)), text, attributes

    @staticmethod
    def _chance(p: float) -> bool:
        return p > 0 and float(torch.rand(())) < p


class PairCollate:
    """Stack pixels, tokenise texts, and mark which texts describe which images:
    (pixels [B, S, S, 3] uint8, tokens [B, L], positives [B, B] bool)."""

    def __init__(self, context_length: int):
        self.tokenizer = open_clip_tokenizer(context_length)

    def __call__(self, batch: list[tuple[torch.Tensor, str, dict | None]]):
        pixels, texts, attributes = zip(*batch)
        return torch.stack(pixels), self.tokenizer(list(texts)), positive_pairs(list(texts), list(attributes))


class CropLabels(Dataset):
    """Evaluation crops with their labels: (pixels uint8 [S, S, 3], shape index, colour index)."""

    def __init__(self, pool: PairPool, task: ZeroShotTask):
        self.images = pool.images[pool.crop_indices()]
        attrs = [pool.attributes[i] for i in pool.crop_indices()]
        self.shapes = torch.tensor([task.shapes.index(a["shape"]) for a in attrs])
        self.colors = torch.tensor([task.colors.index(a["color"]) for a in attrs])

    def __len__(self) -> int:
        return len(self.shapes)

    def __getitem__(self, index: int):
        return torch.from_numpy(self.images[index]), self.shapes[index], self.colors[index]


class ShapeWorldPairData(L.LightningDataModule):
    """Training pairs (scenes + crops) from one seed, zero-shot evaluation crops from another.

    Args:
        train: the training pool (see `PoolSpec`).
        val: the evaluation pool; only its crops are used, labelled by shape and colour.
        context_length: the text tower's token context.
        batch_size / num_workers: DataLoader settings (workers only draw texts and turn crops).
        cache_dir: where rendered pools are cached (None: render every run).
        render_workers: processes that render the pools.
        augment: random 90-degree turns and mirroring of training crops.
        period / bare / article: text variants, see `ImageTextPairs`.
    """

    def __init__(
        self,
        train: PoolSpec,
        val: PoolSpec,
        context_length: int,
        batch_size: int = 128,
        num_workers: int = 0,
        cache_dir: str | Path | None = "artifacts/cache",
        render_workers: int = 0,
        augment: bool = True,
        period: float = 0.5,
        bare: float = 0.0,
        article: float = 0.0,
    ):
        super().__init__()
        if train.seed == val.seed:
            raise ValueError(f"the evaluation seed must differ from the training seed, both are {train.seed}")
        if train.image_size != val.image_size:
            raise ValueError(f"train and val image sizes differ: {train.image_size} vs {val.image_size}")
        self.train_spec, self.val_spec = train, val
        self.collate = PairCollate(context_length)
        self.batch_size, self.num_workers = batch_size, num_workers
        self.cache_dir, self.render_workers, self.augment = cache_dir, render_workers, augment
        self.period, self.bare, self.article = period, bare, article
        self.task = ZeroShotTask.shapeworld()
        self.train_pairs: ImageTextPairs | None = None
        self.val_crops: CropLabels | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.train_pairs is None:
            pool = cached_pool(self.train_spec, self.cache_dir, self.render_workers)
            self.train_pairs = ImageTextPairs(pool, self.augment, self.period, self.bare, self.article)
        if self.val_crops is None:
            self.val_crops = CropLabels(cached_pool(self.val_spec, self.cache_dir, self.render_workers), self.task)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(
            self.train_pairs, batch_size=self.batch_size, shuffle=True, drop_last=True,
            num_workers=self.num_workers, collate_fn=self.collate, persistent_workers=self.num_workers > 0,
        )

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_crops, batch_size=256, num_workers=0)
