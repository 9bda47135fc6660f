"""The `lvis` package (0.5.3, the last release) with its two quirks worked around, in one place.

Import LVIS, LVISEval and LVISResults from here, never from `lvis` directly, so the shim is
always in force. Install: `pip install --no-deps lvis==0.5.3` (its metadata pulls
opencv-python, which would clash with albumentations' opencv-python-headless; `lvis.vis`
imports `cv2` at import time and the headless build provides it). Importing `lvis` also
calls `logging.basicConfig(level=WARN)`, which only acts when the root logger has no handler: a
library must not configure the application's logging (the handler it added kept whatever stderr was
at import time, and later log calls from anywhere wrote to it, or failed with "Logging error" once it
was closed), so the import runs with a placeholder handler on the root logger.
"""

from __future__ import annotations

import logging
import types

import numpy as np

_placeholder = logging.NullHandler()
logging.getLogger().addHandler(_placeholder)  # lvis's basicConfig acts only on a root logger without handlers
try:
    from lvis import LVIS, LVISEval, LVISResults
    from lvis import eval as _lvis_eval
finally:
    logging.getLogger().removeHandler(_placeholder)


class _NumpyWithFloat(types.ModuleType):
    """numpy as `lvis.eval` sees it: `LVISEval.accumulate` calls `astype(np.float)`, an alias
    removed in numpy 1.24 (AttributeError on numpy 2). The alias is added for that module
    only, so numpy itself stays untouched for everyone else."""

    float = float

    def __getattr__(self, name: str):
        return getattr(np, name)


if not hasattr(_lvis_eval.np, "float"):
    _lvis_eval.np = _NumpyWithFloat("numpy")


def lvis_from_dict(dataset: dict) -> LVIS:
    """An LVIS index over a loaded json (its constructor only reads files; the json stays shared, not copied)."""
    lvis = LVIS.__new__(LVIS)
    lvis.logger = logging.getLogger(LVIS.__module__)
    lvis.dataset = dataset
    lvis._create_index()
    return lvis


def empty_results(lvis_gt: LVIS) -> LVISResults:
    """LVISResults holding no detections: its constructor reads `results[0]` and fails on []."""
    res = LVISResults.__new__(LVISResults)
    res.logger = logging.getLogger(LVISResults.__module__)
    res.dataset = {**lvis_gt.dataset, "annotations": []}
    res._create_index()
    return res


__all__ = ["LVIS", "LVISEval", "LVISResults", "empty_results", "lvis_from_dict"]
