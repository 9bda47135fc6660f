"""One detection as returned to users: a box in original pixels, a score and the matched query."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class Detection:
    box: list[float]  # xyxy, original image pixels
    score: float  # sigmoid score in 0..1
    label: int  # index of the matched query
    query: str  # the matched query text

    def to_dict(self) -> dict:
        return asdict(self)
