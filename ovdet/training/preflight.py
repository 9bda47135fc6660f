"""What `ovdet train` refuses before any slow work, and before Hydra writes anything into the run folder.

A run folder that already holds a run is not trained over from scratch unless asked (`overwrite=true`);
files in it that ovdet did not write are never replaced; trainer limits that Lightning would turn into an
endless run or an `OverflowError` are one line each.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ovdet.errors import OvdetError
from ovdet.training.csv_log import ExperimentWriter, check_metrics_file

CSV_LOGGER = "ovdet.training.csv_log.ResumableCSVLogger"
EXPORT = "ovdet.training.export.ExportDetector"
EXPORT_TOWER = "ovdet.distill.export_tower.ExportTower"
IMAGE_FOLDER_DATA = "ovdet.distill.image_folder_data.ImageFolderDataModule"


def check_run(cfg: DictConfig, run_dir: str | Path | None) -> None:
    """Every refusal that needs no model, no data and no trainer: trainer limits, then the run folder.

    Args:
        cfg: the composed train config (`paths.output_dir` resolvable, or `run_dir` given).
        run_dir: the run folder; None skips the folder checks (not known yet).
    Raises:
        OvdetError: one line naming the value or file and the fix.
    """
    check_trainer_limits(cfg.get("trainer"))
    check_distill_images(cfg.get("data"))
    if run_dir is None:
        return
    run_dir = Path(run_dir)
    overwrite = bool(cfg.get("overwrite", False))
    if cfg.get("ckpt_path") is None and not overwrite:
        model_dirs = _outputs(cfg, EXPORT, "dirpath") + _outputs(cfg, EXPORT_TOWER, "dirpath")
        check_not_a_finished_run(run_dir, _checkpoint_dirs(cfg), model_dirs)
    for log_dir in _csv_log_dirs(cfg):
        check_metrics_file(Path(log_dir) / ExperimentWriter.NAME_METRICS_FILE, overwrite)
    from ovdet.models.model_folder import check_model_target

    for folder in _outputs(cfg, EXPORT, "dirpath"):
        check_model_target(Path(folder))
    if _outputs(cfg, EXPORT_TOWER, "dirpath"):
        from ovdet.distill.export_tower import check_tower_target

        for folder in _outputs(cfg, EXPORT_TOWER, "dirpath"):
            check_tower_target(Path(folder))


def check_distill_images(data: DictConfig | None) -> None:
    """The dense-distillation stage's `data.images`: a folder holding images, checked before any model loads."""
    if isinstance(data, DictConfig) and OmegaConf.select(data, "_target_") == IMAGE_FOLDER_DATA:
        images = data.get("images")
        if images is not None:
            from ovdet.distill.image_folder_data import check_image_folder

            check_image_folder(str(images))


def check_trainer_limits(trainer: DictConfig | None) -> None:
    """max_epochs / max_steps that end a run: Lightning's -1 ("no limit") needs the other one set."""
    if not trainer:
        return
    max_epochs, max_steps = trainer.get("max_epochs"), trainer.get("max_steps")
    steps_set = isinstance(max_steps, int) and max_steps > 0
    if max_epochs is not None and (not isinstance(max_epochs, int) or max_epochs < -1):
        raise OvdetError(f"trainer.max_epochs={max_epochs} is not a number of epochs; give an integer >= 1 "
                         "(or -1 with trainer.max_steps=N)")
    if max_steps is not None and (not isinstance(max_steps, int) or max_steps < -1 or max_steps == 0):
        raise OvdetError(f"trainer.max_steps={max_steps} is not a number of steps; give an integer >= 1, or -1 for "
                         "no step limit")
    if max_epochs == -1 and not steps_set:
        raise OvdetError("trainer.max_epochs=-1 (no epoch limit) with no trainer.max_steps would train forever: "
                         "give trainer.max_steps=N, or trainer.max_epochs=N")


def check_not_a_finished_run(run_dir: Path, checkpoint_dirs: list[str], model_dirs: list[str]) -> None:
    """Refuse a new run into a folder that holds checkpoints or a trained model of an earlier one."""
    found = [p for d in checkpoint_dirs if Path(d).is_dir() for p in sorted(Path(d).glob("*.ckpt"))]
    found += [Path(d) for d in model_dirs if Path(d).is_dir() and any(Path(d).iterdir())]
    if found:
        raise OvdetError(
            f"run folder '{run_dir}' already holds a run ('{found[0]}'); training from scratch would replace its "
            "checkpoints and model: resume it with ckpt_path=last, give a new hydra.run.dir, or pass overwrite=true"
        )


def earlier_checkpoints(cfg: DictConfig) -> list[Path]:
    """The checkpoints an earlier run left in this run's checkpoint folders."""
    return [p for d in _checkpoint_dirs(cfg) if Path(d).is_dir() for p in sorted(Path(d).glob("*.ckpt"))]


def clear_earlier_checkpoints(cfg: DictConfig) -> int:
    """With `overwrite=true` and no `ckpt_path`: delete the earlier run's checkpoints, so a later
    `ckpt_path=last` can never resume the old run's weights (the new run writes only the names it
    reuses, and may be stopped before its first save). Returns how many were deleted."""
    if not cfg.get("overwrite", False) or cfg.get("ckpt_path") is not None:
        return 0
    old = earlier_checkpoints(cfg)
    for path in old:
        path.unlink(missing_ok=True)
    return len(old)


def _checkpoint_dirs(cfg: DictConfig) -> list[str]:
    return _outputs(cfg, "lightning.pytorch.callbacks.ModelCheckpoint", "dirpath")


def _csv_log_dirs(cfg: DictConfig) -> list[str]:
    """`save_dir/name/version` of each ovdet CSV logger (Lightning's own layout, name/version may be empty)."""
    dirs = []
    for entry in _entries(cfg.get("logger"), CSV_LOGGER):
        version = entry.get("version")
        if version is None:  # Lightning picks a new version_N folder: nothing to check
            continue
        version = f"version_{version}" if isinstance(version, int) else str(version)
        dirs.append(str(Path(str(entry.get("save_dir")), str(entry.get("name") or ""), version)))
    return dirs


def _outputs(cfg: DictConfig, target: str, key: str) -> list[str]:
    return [str(entry.get(key)) for entry in _entries(cfg.get("callbacks"), target) if entry.get(key)]


def _entries(group: DictConfig | None, target: str) -> list[DictConfig]:
    if not isinstance(group, DictConfig):
        return []
    return [e for e in group.values() if isinstance(e, DictConfig) and OmegaConf.select(e, "_target_") == target]
