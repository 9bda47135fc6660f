"""What training does with a NaN or infinite loss: stop with a message naming the step, or skip the batch."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_warn

from ovdet.errors import NonFiniteLossError

POLICIES = ("stop", "skip")


def check_loss(loss: torch.Tensor, module: L.LightningModule, batch_idx: int, policy: str) -> torch.Tensor | None:
    """The loss to optimise, or None to skip this batch.

    "stop" raises `NonFiniteLossError` before the optimizer step, so no NaN reaches the weights
    and no checkpoint is written after it: the last checkpoint stays the last good one. "skip"
    drops the batch with a warning. Every process takes the same branch (DDP): one all-reduce
    of a flag per step.
    """
    bad = not bool(torch.isfinite(loss.detach()).all())
    trainer = module._trainer
    if trainer is not None:
        bad = trainer.strategy.reduce_boolean_decision(bad, all=False)
    if not bad:
        return loss
    where = f"global step {module.global_step} (epoch {module.current_epoch}, batch {batch_idx})"
    value = loss.detach().float().item()
    if policy == "stop":
        raise NonFiniteLossError(
            f"train/loss is {value} at {where}; training stopped before this step changed the weights. "
            f"{_last_checkpoint_hint(trainer)}Lower the learning rate, check the data, or set "
            "module.nonfinite_loss=skip to skip such batches"
        )
    rank_zero_warn(f"train/loss is {value} at {where}; batch skipped (module.nonfinite_loss=skip)")
    if trainer is None or trainer.world_size == 1:
        return None  # Lightning skips backward and the optimizer step
    # DDP cannot skip a step on some ranks only: a zero loss keeps the gradient all-reduce in step.
    return sum(p.sum() for p in module.parameters() if p.requires_grad) * 0.0


def _last_checkpoint_hint(trainer) -> str:
    callbacks = getattr(trainer, "checkpoint_callbacks", []) if trainer is not None else []
    saved = [Path(p) for p in (getattr(cb, "last_model_path", "") for cb in callbacks) if p and Path(p).is_file()]
    if saved:
        last = max(saved, key=lambda p: p.stat().st_mtime)
        return f"The last good checkpoint is '{last}' (resume with ckpt_path=last). "
    return "No checkpoint was written before this step. "
