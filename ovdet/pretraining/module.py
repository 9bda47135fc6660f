"""The LightningModule that pretrains a whole open_clip CLIP contrastively, from scratch."""

from __future__ import annotations

import math
from collections.abc import Callable

import lightning as L
import torch
from torch import nn

from ovdet.towers.open_clip_io import open_clip_tokenizer
from ovdet.pretraining.contrastive_loss import clip_contrastive_loss
from ovdet.pretraining.zero_shot import ZeroShotTask, zero_shot_metrics
from ovdet.training.schedule import optimizers_config


class ContrastivePretraining(L.LightningModule):
    """Symmetric InfoNCE over each batch of (image, text) pairs with CLIP's learnable temperature.

    Validation is zero-shot classification of held-out single-object crops (`val/shape_acc`,
    `val/shape_acc_base`, `val/shape_acc_novel`, `val/color_acc`).

    Args:
        model: an open_clip CLIP from `build_open_clip` (its preprocess config gives mean/std).
        optimizer: `_partial_` optimizer; weight decay is kept off biases, norms, embeddings' 1-d
            parameters and the temperature.
        scheduler: `_partial_` schedule; `total_steps` is filled in from the trainer.
        task: names and prompts for zero-shot validation (default: ShapeWorld's).
        max_logit_scale: the inverse temperature is clamped at this (CLIP: 100).
        multi_positive: every text that describes an image is its positive (identical texts,
            "a star" for every star crop), not only its own; see `clip_contrastive_loss`.
        channels_last: NHWC convolutions (about 1.6x faster on CPU here).
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: Callable,
        scheduler: Callable | None = None,
        task: ZeroShotTask | None = None,
        max_logit_scale: float = 100.0,
        multi_positive: bool = True,
        channels_last: bool = True,
    ):
        super().__init__()
        self.model = model
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.task = task or ZeroShotTask.shapeworld()
        self.max_log_scale = math.log(max_logit_scale)
        self.multi_positive, self.channels_last = multi_positive, channels_last
        pre = model.open_clip_config["preprocess_cfg"]
        self.register_buffer("mean", torch.tensor(pre["mean"]).view(1, 3, 1, 1) * 255, persistent=False)
        self.register_buffer("std", torch.tensor(pre["std"]).view(1, 3, 1, 1) * 255, persistent=False)
        self.tokenizer = open_clip_tokenizer(model.text.context_length)
        self._val_outputs: list[tuple[torch.Tensor, ...]] = []

    def on_fit_start(self) -> None:
        if self.channels_last:
            self.model.visual.to(memory_format=torch.channels_last)

    def on_fit_end(self) -> None:
        # Back to the default layout: the trained CLIP then computes exactly what its saved copy does.
        self.model.visual.to(memory_format=torch.contiguous_format)

    def pixels(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 [B, S, S, 3] -> normalised float [B, 3, S, S]."""
        x = (images.permute(0, 3, 1, 2).float() - self.mean) / self.std  # [B, 3, S, S]
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x.contiguous()

    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        return self.model.encode_text(self.tokenizer(list(texts)).to(self.device))  # [N, E]

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        images, tokens, positives = batch  # [B, S, S, 3] uint8, [B, L], [B, B] bool
        image_embeds = self.model.encode_image(self.pixels(images))  # [B, E]
        text_embeds = self.model.encode_text(tokens)  # [B, E]
        positives = positives if self.multi_positive else None
        loss = clip_contrastive_loss(image_embeds, text_embeds, self.model.logit_scale, positives)
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/logit_scale", self.model.logit_scale.detach().exp(), prog_bar=True)
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        with torch.no_grad():
            self.model.logit_scale.clamp_(0.0, self.max_log_scale)

    def validation_step(self, batch, batch_idx: int) -> None:
        images, shapes, colors = batch
        self._val_outputs.append((self.model.encode_image(self.pixels(images)).float(), shapes, colors))

    def on_validation_epoch_end(self) -> None:
        if not self._val_outputs:
            return
        embeds, shapes, colors = (torch.cat(parts) for parts in zip(*self._val_outputs))
        self._val_outputs.clear()
        metrics = zero_shot_metrics(self.encode_texts, embeds, shapes, colors, self.task)
        self.log_dict({f"val/{k}": v for k, v in metrics.items()}, prog_bar=True)

    def configure_optimizers(self):
        decay = [p for p in self.model.parameters() if p.requires_grad and p.ndim >= 2]
        no_decay = [p for p in self.model.parameters() if p.requires_grad and p.ndim < 2]
        optimizer = self.optimizer_factory(params=[{"params": decay}, {"params": no_decay, "weight_decay": 0.0}])
        return optimizers_config(optimizer, self.scheduler_factory, self, "step")
