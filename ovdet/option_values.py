"""Numeric options checked at the boundary, for the Python API and the CLI alike: one `OvdetError` line
naming the option and the value.

Without these, `max_detections=2.5` fails deep in a slice with a TypeError, `threshold=nan` keeps
nothing without a word, and `True` passes as the count 1.
"""

from __future__ import annotations

import math
from numbers import Integral, Real

from ovdet.errors import OvdetError


def _real(name: str, value, rule: str) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or math.isnan(value):
        raise OvdetError(f"{name} must be {rule}, got {value!r}")
    return float(value)


def check_score(name: str, value) -> float:
    """A score threshold: a number in [0, 1] (sigmoid scores lie there)."""
    rule = "a number in [0, 1] (a sigmoid score), e.g. 0.3"
    if not 0.0 <= _real(name, value, rule) <= 1.0:
        raise OvdetError(f"{name} must be {rule}, got {value!r}")
    return float(value)


def check_iou(name: str, value) -> float:
    """An IoU threshold: a number in (0, 1]."""
    rule = "an IoU in (0, 1] (1 turns NMS off), e.g. 0.5"
    if not 0.0 < _real(name, value, rule) <= 1.0:
        raise OvdetError(f"{name} must be {rule}, got {value!r}")
    return float(value)


def check_count(name: str, value) -> int:
    """A count: a positive integer (int or numpy integer; not a bool, not a float)."""
    if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
        raise OvdetError(f"{name} must be a positive integer, got {value!r}")
    return int(value)
