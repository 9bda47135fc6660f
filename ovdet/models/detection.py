"""One detection as returned to users: a box in original pixels, a score and the matched query."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ovdet.models.negative_queries import drop_vetoed
from ovdet.postprocess import PostProcess


@dataclass
class Detection:
    box: list[float]  # xyxy, original image pixels
    score: float  # sigmoid score in 0..1
    label: int  # index of the matched query
    query: str  # the matched query text

    def to_dict(self) -> dict:
        return asdict(self)


def to_detections(out: dict, sizes: list[tuple[int, int]], labels: list[str], post: PostProcess) -> list[list[Detection]]:
    """`Detector.predict` outputs -> per-image Detections, negatives' vetoes applied (the demo
    re-filters kept outputs with it, without a forward pass)."""
    results = []
    for i, dets in enumerate(post(out, sizes)):
        if "negative_veto" in out:
            dets = drop_vetoed(dets, out["negative_veto"][i])
        results.append(
            [
                Detection([round(v, 2) for v in box.tolist()], round(float(s), 4), int(l), labels[int(l)])
                for box, s, l in zip(dets["boxes"], dets["scores"], dets["labels"])
            ]
        )
    return results
