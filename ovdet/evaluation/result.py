"""What an evaluation returns: the metrics dict plus the precision arrays behind it."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class EvalResult:
    """Metrics (what metrics.json holds) and the interpolated precision for PR plots.

    metrics: headline numbers in percent (-1 where undefined), `per_category`, info keys, `meta`.
    precision: [T, R, K] interpolated precision at area "all" and the largest max-dets setting,
        -1 for categories without ground truth (pycocotools / LVIS convention).
    iou_thrs: [T] IoU thresholds; rec_thrs: [R] recall thresholds; cat_ids: [K] category ids.
    """

    metrics: dict
    precision: np.ndarray
    iou_thrs: np.ndarray
    rec_thrs: np.ndarray
    cat_ids: list[int] = field(default_factory=list)

    def pr_curve(self, cat_id: int, iou: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
        """(recall [R], precision [R]) of one category at one IoU threshold."""
        t = int(np.argmin(np.abs(self.iou_thrs - iou)))
        if not np.isclose(self.iou_thrs[t], iou):
            raise ValueError(f"iou {iou} is not one of the thresholds {self.iou_thrs.tolist()}")
        if cat_id not in self.cat_ids:
            raise ValueError(f"category id {cat_id} was not evaluated")
        return self.rec_thrs, self.precision[t, :, self.cat_ids.index(cat_id)]


def mean_precision(precision: np.ndarray, cat_index: list[int], iou_index: int | None = None) -> float:
    """AP in percent over the given category columns, as pycocotools' summarize does it.

    precision: [T, R, K]. Entries of -1 (no ground truth) are left out; -1.0 if nothing is left.
    """
    s = precision[:, :, cat_index]  # [T, R, k]
    if iou_index is not None:
        s = s[[iou_index]]  # [1, R, k]
    valid = s[s > -1]
    return float(np.mean(valid)) * 100.0 if valid.size else -1.0
