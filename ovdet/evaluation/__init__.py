"""Evaluation: OV-COCO and LVIS box metrics from ground truth + COCO results, and reports.

Light on import (numpy, pycocotools). The optional `lvis` package and matplotlib load only
from their modules: `ovdet.evaluation.lvis_metrics` and `ovdet.evaluation.report`.
"""

from ovdet.evaluation.coco_ov import evaluate_coco_ov, run_coco_ov
from ovdet.evaluation.predictions import load_predictions
from ovdet.evaluation.result import EvalResult
from ovdet.evaluation.splits import Split, load_split, split_from_categories

__all__ = [
    "EvalResult",
    "Split",
    "evaluate_coco_ov",
    "load_predictions",
    "load_split",
    "run_coco_ov",
    "split_from_categories",
]
