"""Build every training object from a composed Hydra config and fit: what `tools/train.py` and `ovdet train` run."""

from __future__ import annotations

import pickle

import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.utilities import rank_zero_info
from omegaconf import DictConfig, OmegaConf

from ovdet.training.checkpoint import unsafe_checkpoint_error

RECIPE_KEYS = ("name", "seed", "model", "data", "module", "trainer")


def train(cfg: DictConfig) -> dict[str, float]:
    """Seed, instantiate detector -> datamodule -> module -> trainer, and `fit` (resuming from
    `ckpt_path` when set; `ckpt_path=last` resumes from the run folder's newest `last*.ckpt`, or
    starts afresh when there is none, so one command both starts and resumes a run that has a
    fixed folder, `hydra.run.dir=...`). Returns the trainer's final callback metrics."""
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    detector = instantiate(cfg.model)
    # The data pipeline must produce exactly the detector's input: take it from the built model.
    datamodule = instantiate(
        cfg.data,
        image_size=detector.image_size,
        image_mean=list(detector.backbone.image_mean),
        image_std=list(detector.backbone.image_std),
    )
    module = instantiate(cfg.module, detector=detector)
    module.recipe = recipe(cfg)  # set after: instantiate would build the recipe's own `_target_`s
    loggers = instantiate_group(cfg.get("logger"))
    callbacks = instantiate_group(cfg.get("callbacks"))
    if not loggers:  # LearningRateMonitor refuses to run without a logger
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    # weights_only: a checkpoint holds tensors and plain containers only; one with pickled objects
    # (code that would run on load) is refused instead of executed.
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"), weights_only=True)
    except pickle.UnpicklingError as err:
        raise unsafe_checkpoint_error(cfg.get("ckpt_path"), err) from None
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    rank_zero_info(f"final metrics: {metrics}")
    return metrics


def instantiate_group(group: DictConfig | None) -> list:
    """Instantiate every entry with a `_target_` of a callbacks/logger group (a dict of named configs)."""
    if not group:
        return []
    return [instantiate(entry) for entry in group.values() if isinstance(entry, DictConfig) and "_target_" in entry]


def recipe(cfg: DictConfig) -> dict:
    """The resolved parts of the config that say how the model was trained (saved with the model)."""
    return {key: OmegaConf.to_container(cfg[key], resolve=True) if isinstance(cfg[key], DictConfig) else cfg[key]
            for key in RECIPE_KEYS if key in cfg}
