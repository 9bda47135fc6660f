"""The label-free dense-distillation stage (CLIPSelf) as a LightningModule: images in, no labels."""

from __future__ import annotations

import copy
from collections.abc import Callable

import lightning as L
import torch
import torch.nn.functional as F

from ovdet.boxes import square_context
from ovdet.distill.random_boxes import grid_boxes, random_grid_boxes_batch
from ovdet.distill.region_embedding import crop_embeddings, dense_region_embeddings
from ovdet.distill.region_tower import RegionTower
from ovdet.errors import OvdetError
from ovdet.training.schedule import optimizers_config


class DenseDistillModule(L.LightningModule):
    """Student tower's box-pooled dense embedding pulled toward a frozen teacher copy's embedding of the crop.

    loss_distill = mean over boxes of 1 - cos(student region embedding, teacher crop embedding). Both read
    the box's context square (`square_context`: side (1 + 2 * context) x the box's long side), the view a
    CLIP was trained on: on ShapeWorld the packaged CLIP names 95 % of such crops right, 33 % of tight
    stretched ones (CLIPSelf's), and distilling toward the latter never raised box-pooled accuracy.
    Boxes are a detector's class-agnostic proposals (`proposals`, CLIPSelf's region proposals) or, without
    one or where it proposes nothing, random grid cells (`random_grid_boxes`). The teacher is the tower as
    given, frozen and in eval mode for the whole run, so the target never drifts. The student is the given
    tower itself: after `fit`, the `LoadedCLIP` it came from holds the distilled weights.

    Args:
        tower: the region view of the tower to distil (`region_tower(load_clip(DIR))`).
        optimizer: `_partial_` optimizer (e.g. AdamW), given the student's trainable parameters.
        trainable_layers: how many of the tower's last stages (ResNet) or blocks (ViT) train; >= 1.
        max_split: grids of m x n boxes per image, m, n in 1..max_split.
        seed: seeds the box generator.
        scheduler: optional `_partial_` schedule (`total_steps` filled in from the trainer).
        context: margin of the context square on every side, as a fraction of the box's long side; 0 pools
            and crops the tight box, stretched (CLIPSelf).
        proposals: a `DetectorProposals` (or any callable pixels [B, 3, S, S] -> B tensors [K_i, 4] xyxy),
            or None for grid cells only.
        name_embeddings: [N, E] L2-normalised text embeddings of a list of names (e.g. the names a head will
            be trained on) and `names_weight` > 0: the loss adds names_weight x KL(teacher || student) of
            the softmax over those names at `names_scale`, so the student also ranks the names as the
            teacher's crop does. Still the tower's own crops as the target, no box labels; on ShapeWorld's
            12 base names it raised box-pooled accuracy on base AND novel shapes (docs/RESULTS.md §5e).
    Batch: {"pixel_values": [B, 3, S, S] normalised, optionally "image_hw": [B, 2] the un-padded image size
    in input pixels (boxes stay inside it)}.
    """

    def __init__(
        self,
        tower: RegionTower,
        optimizer: Callable,
        trainable_layers: int = 1,
        max_split: int = 4,
        seed: int = 0,
        scheduler: Callable | None = None,
        context: float = 0.0,
        proposals: Callable | None = None,
        name_embeddings: torch.Tensor | None = None,
        names_weight: float = 0.0,
        names_scale: float = 100.0,
    ):
        super().__init__()
        if not 0.0 <= context <= 2.0:
            raise OvdetError(f"context={context}; give the margin on every side as a fraction of the box, 0 to 2 "
                             "(0.2: a square 1.4x the box)")
        if trainable_layers < 1:
            raise OvdetError(f"trainable_layers={trainable_layers} would train nothing; use 1 or more")
        if names_weight < 0 or (names_weight > 0 and name_embeddings is None):
            raise OvdetError(f"names_weight={names_weight}: give a weight >= 0, and names to rank when it is > 0 "
                             "(module.names=[circle,square,...])")
        if max_split < 1:
            raise OvdetError(f"max_split={max_split}; use an integer >= 1 (CLIPSelf uses up to 6)")
        self.teacher = copy.deepcopy(tower).requires_grad_(False).eval()
        self.student = tower
        self.student.set_trainable_layers(trainable_layers)
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.max_split, self.context, self.proposals = max_split, context, proposals
        self.generator = torch.Generator().manual_seed(seed)
        self.names_weight, self.names_scale = names_weight, names_scale
        # Rebuilt from the config on resume, so not saved in checkpoints.
        self.register_buffer("name_embeddings", name_embeddings, persistent=False)
        self.save_hyperparameters(ignore=["tower", "optimizer", "scheduler", "proposals", "name_embeddings"])

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["box_generator"] = self.generator.get_state()  # a resumed run draws the boxes it would have

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if "box_generator" in checkpoint:
            self.generator.set_state(checkpoint["box_generator"])

    def train(self, mode: bool = True):
        super().train(mode)
        self.teacher.eval()  # the target: no dropout, whatever Lightning asks of the module
        return self

    def boxes(self, pixel_values: torch.Tensor, image_hw: torch.Tensor | None) -> list[torch.Tensor]:
        """B tensors [K_i, 4] xyxy in input pixels: the proposals of each image, or where there are none (or
        no proposer) a random grid over the image (or the whole input)."""
        if image_hw is None:
            side = pixel_values.shape[-1]
            image_hw = torch.tensor([[side, side]] * pixel_values.shape[0])
        grids = random_grid_boxes_batch(image_hw.cpu(), self.max_split, self.generator)
        if self.proposals is not None:
            proposed = self.proposals(pixel_values)
            grids = [p if len(p) else g for p, g in zip(proposed, grids)]
        return [b.to(pixel_values.device) for b in grids]

    def distill_loss(self, pixel_values: torch.Tensor, boxes: list[torch.Tensor]) -> torch.Tensor:
        """Mean of 1 - cos(student dense region, teacher crop) over all boxes of the batch (context squares)."""
        if self.context > 0:
            boxes = [square_context(b, self.context) for b in boxes]
        with torch.no_grad():
            target = crop_embeddings(self.teacher, pixel_values, boxes)  # [K, E]
        regions = dense_region_embeddings(self.student, pixel_values, boxes)  # [K, E]
        target = target.to(regions)
        loss = (1.0 - F.cosine_similarity(regions, target, dim=-1)).mean()
        if self.names_weight > 0:
            loss = loss + self.names_weight * self.names_loss(regions, target)
        return loss

    def names_loss(self, regions: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """KL(teacher || student) of the softmax over the names, per box, averaged: regions / target [K, E]."""
        names = self.name_embeddings.to(regions)  # [N, E]
        student = (self.names_scale * F.normalize(regions, dim=-1) @ names.T).log_softmax(-1)  # [K, N]
        teacher = (self.names_scale * F.normalize(target, dim=-1) @ names.T).log_softmax(-1)  # [K, N]
        return F.kl_div(student, teacher, log_target=True, reduction="batchmean")

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        pixel_values = batch["pixel_values"]  # [B, 3, S, S]
        loss = self.distill_loss(pixel_values, self.boxes(pixel_values, batch.get("image_hw")))
        self.log("train/loss_distill", loss, prog_bar=True, batch_size=pixel_values.shape[0])
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        """The same loss on each image's fixed 2 x 2 grid (no random draw, so epochs compare)."""
        pixel_values = batch["pixel_values"]
        side = float(pixel_values.shape[-1])
        hw = batch.get("image_hw")
        hw = hw.tolist() if hw is not None else [[side, side]] * pixel_values.shape[0]
        boxes = [grid_boxes(float(h), float(w), 2, 2).to(pixel_values.device) for h, w in hw]
        self.log("val/loss_distill", self.distill_loss(pixel_values, boxes), batch_size=pixel_values.shape[0])

    def configure_optimizers(self):
        params = self.student.trainable_parameters()
        optimizer = self.optimizer_factory(params=params)
        return optimizers_config(optimizer, self.scheduler_factory, self, "step")

