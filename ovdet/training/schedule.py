"""Learning-rate schedules, built by Hydra as `_partial_` and completed by the LightningModule."""

from __future__ import annotations

import inspect
import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def warmup_cosine(optimizer: Optimizer, total_steps: int, warmup_steps: int = 0, min_lr_ratio: float = 0.0) -> LambdaLR:
    """Linear warmup over `warmup_steps`, then cosine decay to `min_lr_ratio` x lr at `total_steps`.

    `total_steps` is filled in by the module from the trainer (`estimated_stepping_batches`).
    Every parameter group keeps its own base lr (the backbone's lower one included).
    """
    if total_steps < 1 or warmup_steps < 0 or not 0.0 <= min_lr_ratio <= 1.0:
        raise ValueError(
            f"need total_steps >= 1, warmup_steps >= 0 and 0 <= min_lr_ratio <= 1; "
            f"got {total_steps}, {warmup_steps}, {min_lr_ratio}"
        )

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return LambdaLR(optimizer, factor)


def optimizers_config(optimizer: Optimizer, scheduler_factory, module, interval: str = "step"):
    """What `module.configure_optimizers` returns: the optimizer, plus a scheduler completed from its trainer.

    A `_partial_` scheduler that still needs `total_steps` gets the trainer's `estimated_stepping_batches`.
    """
    if scheduler_factory is None:
        return optimizer
    kwargs = {}
    params = inspect.signature(scheduler_factory).parameters
    if "total_steps" in params and params["total_steps"].default is inspect.Parameter.empty:
        kwargs["total_steps"] = max(1, int(module.trainer.estimated_stepping_batches))
    scheduler = scheduler_factory(optimizer, **kwargs)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": interval}}
