"""`-q "car:0.3"`: a query with its own score threshold, parsed and checked before any model loads."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ovdet.errors import OvdetError
from ovdet.text.queries import validate_queries


@dataclass(frozen=True)
class LabelQuery:
    text: str  # the query, and the category name in the dataset
    threshold: float | None  # its own minimum score; None: --threshold, else the model's default


def parse_label_query(value: str) -> LabelQuery:
    """'car' -> (car, None); 'car:0.3' -> (car, 0.3); 'a:b:0.3' -> (a:b, 0.3): the last ':' splits.

    A tail after the last ':' that is not a number in [0, 1] is refused in one line, so a typo
    ('car:o.3') never becomes a query named 'car:o.3'."""
    text, sep, tail = value.rpartition(":")
    if not sep:
        return LabelQuery(value.strip(), None)
    try:
        threshold = float(tail)
    except ValueError:
        threshold = math.nan
    if not text.strip() or not 0.0 <= threshold <= 1.0:  # NaN fails this too
        raise OvdetError(
            f"-q {value!r}: the part after the last ':' must be a score threshold in [0, 1], e.g. -q 'car:0.3' "
            "(a query that itself holds ':' needs one: -q 'a:b:0.3')"
        )
    return LabelQuery(text.strip(), threshold)


def parse_label_queries(values: list[str]) -> list[LabelQuery]:
    """Every `-q` value parsed; the texts checked as `ovdet detect` checks them (empty, blank, twice)."""
    parsed = [parse_label_query(v) for v in values]
    validate_queries([q.text for q in parsed])
    return parsed


def resolve_thresholds(queries: list[LabelQuery], default: float) -> list[float]:
    """Each query's threshold: its own, else `default` (--threshold, else the model's)."""
    return [default if q.threshold is None else q.threshold for q in queries]
