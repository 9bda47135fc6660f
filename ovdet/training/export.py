"""Turn training into an ovdet model folder: at the end of `fit`, or later from a checkpoint."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch

from ovdet.towers.loader import load_clip
from ovdet.models.detector import Detector
from ovdet.models.model_folder import check_model_target
from ovdet.training.checkpoint import load_checkpoint
from ovdet.training.module import DETECTOR_CONFIG_KEY, DetectionModule

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class ExportDetector(L.Callback):
    """Write the trained detector with `save_pretrained` when training ends (global rank 0 only).

    Args:
        dirpath: the model folder to write (`${paths.output_dir}/detector`).
        copy_clip: put the CLIP into the folder; False keeps a reference (frozen towers only).
        dtype: "float32", "float16" or "bfloat16" for the head weights; None keeps them as trained.
    """

    def __init__(self, dirpath: str | Path, copy_clip: bool = True, dtype: str | None = None):
        if dtype is not None and dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)} or None, got {dtype!r}")
        self.dirpath = Path(dirpath)
        check_model_target(self.dirpath)  # a folder ovdet may not replace is refused now, not after training
        self.copy_clip = copy_clip
        self.dtype = DTYPES[dtype] if dtype else None
        self.exported: Path | None = None

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not isinstance(pl_module, DetectionModule):
            raise TypeError(f"ExportDetector needs a DetectionModule, got {type(pl_module).__name__}")
        if trainer.is_global_zero:
            self.exported = pl_module.export(self.dirpath, copy_clip=self.copy_clip, dtype=self.dtype)


def export_from_checkpoint(
    checkpoint: str | Path, out: str | Path, copy_clip: bool = True, dtype: torch.dtype | None = None
) -> Path:
    """Rebuild the detector stored in a `DetectionModule` checkpoint and save it as a model folder.

    The CLIP named in the checkpoint must still load (its architecture); every weight,
    fine-tuned vision blocks included, comes from the checkpoint.
    """
    path = Path(checkpoint)
    if not path.is_file():
        raise ValueError(f"checkpoint '{path}' not found")
    ckpt = load_checkpoint(path)
    config = ckpt.get(DETECTOR_CONFIG_KEY) if isinstance(ckpt, dict) else None
    if config is None:
        raise ValueError(f"'{path}' is not an ovdet training checkpoint (no '{DETECTOR_CONFIG_KEY}' entry)")
    clip = load_clip(config["clip"]["path"], config.get("trainable_layers", 0))
    detector = Detector.from_config(clip, config)
    prefix = "detector."
    state = {k[len(prefix) :]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}
    missing, unexpected = detector.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"'{path}' does not match its detector: missing {missing[:5]}, unexpected {unexpected[:5]}")
    return detector.save_pretrained(out, copy_clip=copy_clip, dtype=dtype)
