"""The LightningModule that trains a `Detector` head with the set criterion."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_warn

from ovdet.losses.criterion import SetCriterion
from ovdet.models.detector import Detector
from ovdet.training.nonfinite import POLICIES, check_loss
from ovdet.training.schedule import optimizers_config
from ovdet.training.val_ap import ValidationAP

# Parameters of the CLIP vision tower itself (as `Detector` names them); the rest of the
# detector (head, merge norm) is new and trains at the full learning rate.
TOWER_PREFIX = "backbone.vision."
DETECTOR_CONFIG_KEY = "ovdet_detector"


class DetectionModule(L.LightningModule):
    """Train the detection head on base boxes; the text tower stays frozen, always.

    The backbone is frozen unless the detector was built with `trainable_layers=N`; those
    blocks train at `backbone_lr_scale` x the learning rate (a second parameter group).

    Args:
        detector: the model (`Detector.from_clip(...)`).
        criterion: `SetCriterion` (matcher inside); its `weight_dict` gives `train/loss`.
        optimizer: optimizer factory (`_partial_`), called with the parameter groups.
        scheduler: LR scheduler factory (`_partial_`) or None; a factory with a `total_steps`
            argument gets the trainer's estimated number of optimizer steps.
        scheduler_interval: "step" or "epoch".
        backbone_lr_scale: learning-rate factor of the unfrozen backbone blocks.
        val_templates: prompt templates of the validation vocabulary (averaged embeddings).
        val_ap: computes `val/AP50_novel`, `val/AP50_base`, `val/AP50_all`, `val/AP` each
            validation epoch; None logs validation losses only.
        recipe: how the model was trained (the resolved config); saved in the exported model's info.
        nonfinite_loss: on a NaN or infinite training loss, "stop" (raise `NonFiniteLossError`
            naming the step; the last checkpoint stays the last good one) or "skip" the batch.
    """

    def __init__(
        self,
        detector: Detector,
        criterion: SetCriterion,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable | None = None,
        scheduler_interval: str = "step",
        backbone_lr_scale: float = 0.1,
        val_templates: str | Sequence[str] = "single",
        val_ap: ValidationAP | None = None,
        recipe: dict | None = None,
        nonfinite_loss: str = "stop",
    ):
        super().__init__()
        if scheduler_interval not in ("step", "epoch"):
            raise ValueError(f"scheduler_interval must be 'step' or 'epoch', got {scheduler_interval!r}")
        if nonfinite_loss not in POLICIES:
            raise ValueError(f"nonfinite_loss must be one of {POLICIES}, got {nonfinite_loss!r}")
        # Plain types only in hyper-parameters: checkpoints are loaded with weights_only=True.
        val_templates = val_templates if isinstance(val_templates, str) else [str(t) for t in val_templates]
        if backbone_lr_scale < 0:
            raise ValueError(f"backbone_lr_scale must be >= 0, got {backbone_lr_scale}")
        self.save_hyperparameters(ignore=["detector", "criterion", "optimizer", "scheduler", "val_ap"], logger=False)
        self.detector = detector
        self.criterion = criterion
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.scheduler_interval = scheduler_interval
        self.backbone_lr_scale = backbone_lr_scale
        self.val_templates = list(val_templates) if not isinstance(val_templates, str) else val_templates
        self.val_ap = val_ap
        self.recipe = dict(recipe or {})
        self.nonfinite_loss = nonfinite_loss

    # ---- steps -------------------------------------------------------------------------------
    def query_embeddings(self, queries: list[list[str]], templates="single") -> torch.Tensor:
        """Per-image prompt lists -> [B, Q, E] embeddings, each distinct text encoded once (and cached).

        Padded slots repeat the first text; the batch's query mask hides them. Encoded in float32
        outside autocast: the text encoder caches what it returns for good.
        """
        texts = sorted({t for per_image in queries for t in per_image})
        with torch.autocast(device_type=self.device.type, enabled=False):
            table = self.detector.encode_queries(texts, templates)  # [U, E]
        row = {t: i for i, t in enumerate(texts)}
        width = max(len(q) for q in queries)
        index = torch.zeros(len(queries), width, dtype=torch.long)  # [B, Q]
        for b, per_image in enumerate(queries):
            index[b, : len(per_image)] = torch.tensor([row[t] for t in per_image], dtype=torch.long)
        return table[index.to(table.device)]  # [B, Q, E]

    def shared_step(self, batch: dict, templates) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """(model outputs, losses with `loss` = the weighted total)."""
        query_embeds = self.query_embeddings(batch["queries"], templates)  # [B, Q, E]
        outputs = self.detector(batch["pixel_values"], query_embeds, batch["query_mask"])
        if not bool(torch.isfinite(outputs["logits"]).all() & torch.isfinite(outputs["pred_boxes"]).all()):
            # No matching on NaN outputs (it cannot): a NaN loss, which `nonfinite_loss` handles.
            return outputs, {"loss": outputs["logits"].sum() * float("nan")}
        losses = self.criterion(outputs, batch["targets"])
        losses["loss"] = self.criterion.weighted_total(losses)
        return outputs, losses

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor | None:
        # Training prompts already carry their (randomly drawn) template.
        _, losses = self.shared_step(batch, "single")
        self._log("train", losses, len(batch["image_ids"]), on_step=True)
        return check_loss(losses["loss"], self, batch_idx, self.nonfinite_loss)  # None: batch skipped

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        outputs, losses = self.shared_step(batch, self.val_templates)
        self._log("val", losses, len(batch["image_ids"]), on_step=False)
        if self.val_ap is not None:
            self.val_ap.update(outputs, batch)

    def on_validation_epoch_start(self) -> None:
        if self.val_ap is not None:
            self.val_ap.reset()

    def on_validation_epoch_end(self) -> None:
        if self.val_ap is None:
            return
        dataset = getattr(self.trainer.val_dataloaders, "dataset", None)
        if not hasattr(dataset, "coco_gt"):
            rank_zero_warn("val_ap needs a CocoDetection validation set (with coco_gt); AP not computed")
            return
        metrics = self.val_ap.compute(dataset.coco_gt, dataset.split)
        self.val_ap.reset()
        if metrics:
            self.log_dict({f"val/{k}": v for k, v in metrics.items()}, sync_dist=True)

    def _log(self, stage: str, losses: dict[str, torch.Tensor], batch_size: int, on_step: bool) -> None:
        values = {f"{stage}/{name}": value.detach() for name, value in losses.items() if name != "loss"}
        self.log_dict(values, on_step=on_step, on_epoch=not on_step, batch_size=batch_size, sync_dist=not on_step)
        self.log(f"{stage}/loss", losses["loss"].detach(), prog_bar=True, on_step=on_step, on_epoch=not on_step,
                 batch_size=batch_size, sync_dist=not on_step)

    # ---- optimisation ------------------------------------------------------------------------
    def parameter_groups(self) -> list[dict]:
        """Head (and other new layers) at the full LR; unfrozen CLIP vision blocks in their own group."""
        head, tower = [], []
        for name, param in self.detector.named_parameters():
            if param.requires_grad:
                (tower if name.startswith(TOWER_PREFIX) else head).append(param)
        if not head:
            raise ValueError("the detector has no trainable parameter; nothing to train")
        groups = [{"params": head, "name": "head"}]
        if tower:
            groups.append({"params": tower, "name": "backbone"})
        return groups

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(params=self.parameter_groups())
        for group in optimizer.param_groups:
            if group.get("name") == "backbone":
                group["lr"] *= self.backbone_lr_scale  # before the scheduler records each group's base lr
        return optimizers_config(optimizer, self.scheduler_factory, self, self.scheduler_interval)

    # ---- persistence -------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Store how to rebuild the detector, so a checkpoint alone can be exported."""
        reference = self.detector.clip.reference
        if Path(reference).exists():
            reference = str(Path(reference).resolve())  # a relative folder breaks from another cwd
        checkpoint[DETECTOR_CONFIG_KEY] = self.detector.config(reference)
        checkpoint[DETECTOR_CONFIG_KEY]["info"] = self.trained_info()

    def trained_info(self) -> dict:
        """The detector's info after training: no longer untrained, with the recipe and step."""
        info = dict(self.detector.info)
        info.update(untrained=False, recipe=self.recipe, global_step=int(self.global_step))
        return info

    def export(self, path: str | Path, copy_clip: bool = True, dtype: torch.dtype | None = None) -> Path:
        """Save the trained detector as an ovdet model folder (`Detector.from_pretrained` loads it)."""
        self.detector.info = self.trained_info()
        return self.detector.save_pretrained(path, copy_clip=copy_clip, dtype=dtype)
