"""Build every training object from a composed Hydra config and fit: what `tools/train.py` and `ovdet train` run."""

from __future__ import annotations

import pickle
from pathlib import Path

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from ovdet.distill.export_tower import MARKER as TOWER_MARKER
from ovdet.distill.export_tower import ExportTower, write_tower
from ovdet.training.checkpoint import unsafe_checkpoint_error
from ovdet.training.checkpoint_io import use_atomic_checkpoints
from ovdet.training.config_paths import register_resolvers, resolve_paths
from ovdet.training.export import ExportDetector, export_from_checkpoint
from ovdet.training.quiet import quiet_third_party
from ovdet.training.csv_log import ResumableCSVLogger
from ovdet.training.messages import say
from ovdet.training.preflight import check_run, clear_earlier_checkpoints
from ovdet.training.resume import CheckpointState, is_complete, resume_checkpoint
from ovdet.training.run_lock import RunLock
from ovdet.training.sigterm import CheckpointOnSigterm, stopped_error

RECIPE_KEYS = ("name", "seed", "model", "data", "module", "trainer")


def train(cfg: DictConfig) -> dict[str, float]:
    """Seed, instantiate detector -> datamodule -> module -> trainer, and `fit`; returns the final metrics.

    Relative paths are read from the directory the run was started in. `ckpt_path=last` resumes
    from the newest checkpoint of the run folder that loads (or starts afresh when there is none),
    so one command with a fixed `hydra.run.dir` both starts and resumes a run; a run already
    trained to its end says so and keeps its logs. The run folder is locked for the duration
    (`RunLock`). On SIGTERM a checkpoint is saved and `TrainingStopped` is raised.
    """
    register_resolvers()
    resolve_paths(cfg)
    with RunLock(run_folder(cfg)), quiet_third_party():
        check_run(cfg, run_folder(cfg))  # `ovdet train` ran it before Hydra wrote anything; callers of train() too
        removed = clear_earlier_checkpoints(cfg)
        if removed:
            print(f"overwrite=true: removed {removed} checkpoint(s) of the earlier run in {run_folder(cfg)}")
        return _fit(cfg)


def run_folder(cfg: DictConfig) -> str | None:
    """`paths.output_dir`, or None where it cannot be resolved (a config composed outside a Hydra run)."""
    try:
        return OmegaConf.select(cfg, "paths.output_dir", default=None)
    except Exception:  # ${hydra:...} without a running Hydra job
        return None


def _fit(cfg: DictConfig) -> dict[str, float]:
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True, verbose=False)
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
    sigterm = CheckpointOnSigterm()
    callbacks = [*instantiate_group(cfg.get("callbacks")), sigterm]
    if not loggers:  # LearningRateMonitor refuses to run without a logger
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    use_atomic_checkpoints(trainer)
    start = resume_checkpoint(cfg.get("ckpt_path"), trainer)
    if isinstance(start, CheckpointState) and is_complete(start, trainer):
        finish_complete_run(start, trainer, module)
        return {}
    # weights_only: a checkpoint holds tensors and plain containers only; one with pickled objects
    # (code that would run on load) is refused instead of executed.
    ckpt_path = str(start.path) if isinstance(start, CheckpointState) else start
    continue_logs(trainer, start)
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    except pickle.UnpicklingError as err:
        raise unsafe_checkpoint_error(ckpt_path, err) from None
    except SIGTERMException:
        raise stopped_error(trainer, sigterm) from None
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    rank_zero_info(f"final metrics: {metrics}")
    report_outputs(trainer)
    return metrics


def continue_logs(trainer: L.Trainer, start: CheckpointState | str | None) -> None:
    """Drop the metrics rows this run will log again: all of them for a new run, those after the checkpoint
    for a resumed one (a run killed after its last checkpoint logged them already). Main process only."""
    if not trainer.is_global_zero or isinstance(start, str):
        return  # a Lightning name ("best"): its step is not known here, rows are kept
    step, epochs = (start.global_step, start.epochs_done) if start is not None else (0, 0)
    for logger in trainer.loggers:
        if isinstance(logger, ResumableCSVLogger):
            logger.continue_from(step, epochs)


def finish_complete_run(start: CheckpointState, trainer: L.Trainer, module: L.LightningModule | None = None) -> None:
    """Nothing left to train: say so, export the model folder (or distilled tower folder) if the run died
    before writing it."""
    by_steps = 0 <= trainer.max_steps <= start.global_step
    limit = f"trainer.max_steps={trainer.max_steps}" if by_steps else f"trainer.max_epochs={trainer.max_epochs}"
    say(f"run already complete: '{start.path}' has trained {start.epochs_done} epoch(s), {start.global_step} step(s) "
        f"({limit}); nothing to train, every log is kept (raise {limit.split('=')[0]} to train on)")
    for export in (c for c in trainer.callbacks if isinstance(c, ExportDetector)):
        if trainer.is_global_zero and not (export.dirpath / "config.json").is_file():
            export_from_checkpoint(start.path, export.dirpath, copy_clip=export.copy_clip, dtype=export.dtype)
            say(f"exported the model folder from it (it was missing): {export.dirpath}")
    for export in (c for c in trainer.callbacks if isinstance(c, ExportTower)):
        if trainer.is_global_zero and module is not None and not (export.dirpath / TOWER_MARKER).is_file():
            state = torch.load(start.path, map_location="cpu", weights_only=True)["state_dict"]
            module.load_state_dict(state)  # the student's weights are the LoadedCLIP's own modules
            write_tower(module.loaded_clip, export.dirpath, getattr(module, "clip_source", module.loaded_clip.reference))
            say(f"wrote the tower folder from it (it was missing): {export.dirpath}")
    report_outputs(trainer)


def report_outputs(trainer: L.Trainer) -> None:
    """Say where the run's model folder (or distilled tower folder), logs and checkpoints are (main process only)."""
    if not trainer.is_global_zero:
        return
    for export in (c for c in trainer.callbacks if isinstance(c, ExportDetector)):
        if (export.dirpath / "config.json").is_file():
            say(f"model folder: {export.dirpath}  (ovdet detect IMAGE -q TEXT --model {export.dirpath})")
    for export in (c for c in trainer.callbacks if isinstance(c, ExportTower)):
        if (export.dirpath / TOWER_MARKER).is_file():
            say(f"tower folder: {export.dirpath}  (ovdet train experiment=... model.clip={export.dirpath})")
    for logger in trainer.loggers:
        log_dir = getattr(logger, "log_dir", None)
        if log_dir and Path(log_dir).is_dir():
            metrics = Path(log_dir) / "metrics.csv"
            say(f"logs: {metrics if metrics.is_file() else log_dir}")
    folders = sorted({Path(cb.dirpath) for cb in trainer.checkpoint_callbacks if getattr(cb, "dirpath", None)})
    roots = [f for f in folders if f.is_dir() and not any(f != g and g in f.parents for g in folders)]
    if roots:
        say(f"checkpoints: {', '.join(str(f) for f in roots)}  (resume: ckpt_path=last, same hydra.run.dir)")


def instantiate_group(group: DictConfig | None) -> list:
    """Instantiate every entry with a `_target_` of a callbacks/logger group (a dict of named configs)."""
    if not group:
        return []
    return [instantiate(entry) for entry in group.values() if isinstance(entry, DictConfig) and "_target_" in entry]


def recipe(cfg: DictConfig) -> dict:
    """The resolved parts of the config that say how the model was trained (saved with the model)."""
    return {key: OmegaConf.to_container(cfg[key], resolve=True) if isinstance(cfg[key], DictConfig) else cfg[key]
            for key in RECIPE_KEYS if key in cfg}
