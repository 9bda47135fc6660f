"""Training with PyTorch Lightning: the LightningModule, detector export, schedules; Hydra entry in `run`."""

from ovdet.training.export import ExportDetector, export_from_checkpoint
from ovdet.training.module import DetectionModule
from ovdet.training.schedule import warmup_cosine
from ovdet.training.val_ap import ValidationAP

__all__ = ["DetectionModule", "ExportDetector", "ValidationAP", "export_from_checkpoint", "warmup_cosine"]
