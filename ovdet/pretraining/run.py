"""Build every pretraining object from a composed Hydra config, fit, save the CLIP: what `tools/pretrain_clip.py` runs."""

from __future__ import annotations

import json
import time
from pathlib import Path

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.utilities import rank_zero_info
from omegaconf import DictConfig, OmegaConf
from torch import nn

from ovdet.towers.open_clip_io import save_open_clip
from ovdet.training.run import instantiate_group

REPORT_NAME = "pretraining.json"
RECIPE_KEYS = ("clip", "data", "module", "trainer")


def pretrain(cfg: DictConfig) -> tuple[nn.Module, dict]:
    """Seed, instantiate CLIP -> pairs -> module -> trainer, fit, then save the CLIP to `cfg.out_dir`
    (`open_clip_config.json` + `open_clip_model.safetensors`) with `pretraining.json`: the final
    zero-shot accuracies, steps, wall time and the resolved config. Returns the CLIP and that report."""
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg.threads))  # 1 beats 2 when other jobs share the cores
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    model = instantiate(cfg.clip)
    data = instantiate(cfg.data)
    module = instantiate(cfg.module, model=model)
    callbacks = instantiate_group(cfg.get("callbacks"))
    loggers = instantiate_group(cfg.get("logger"))
    if not loggers:  # LearningRateMonitor refuses to run without a logger
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    start = time.perf_counter()
    trainer.fit(module, datamodule=data, ckpt_path=cfg.get("ckpt_path"), weights_only=True)  # no pickled code
    wall = time.perf_counter() - start
    final = trainer.validate(module, datamodule=data, verbose=False)[0]
    report = {
        "steps": int(trainer.global_step),
        "fit_seconds": round(wall, 1),
        "zero_shot": {k.removeprefix("val/"): round(float(v), 4) for k, v in final.items()},
        "train_pairs": len(data.train_pairs),
        "val_crops": len(data.val_crops),
        "config": {k: OmegaConf.to_container(cfg[k], resolve=True) for k in RECIPE_KEYS if k in cfg},
    }
    out_dir = Path(cfg.out_dir)
    save_open_clip(model, out_dir)
    (out_dir / REPORT_NAME).write_text(json.dumps(report, indent=2))
    rank_zero_info(f"saved the CLIP to {out_dir}; {report['steps']} steps in {report['fit_seconds']} s; zero-shot {report['zero_shot']}")
    return model, report
