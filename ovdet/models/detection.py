"""One detection as returned to users, and the one way model outputs become detections and records."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ovdet.models.negative_queries import drop_vetoed
from ovdet.postprocess import PostProcess

UNTRAINED_BANNER = "UNTRAINED PLUMBING MODEL: random weights, boxes are NOT detections"
BOX_DECIMALS, SCORE_DECIMALS = 2, 4  # one rounding for the CLI, the demo and the API


@dataclass
class Detection:
    box: list[float]  # xyxy, original image pixels
    score: float  # sigmoid score in 0..1
    label: int  # index of the matched query
    query: str  # the matched query text

    def to_dict(self) -> dict:
        return asdict(self)

    def to_pipeline(self) -> dict:
        """The transformers `zero-shot-object-detection` pipeline's record: `label` is the text, the box
        corners are ints truncated as the pipeline truncates them."""
        xmin, ymin, xmax, ymax = (int(v) for v in self.box)
        return {"score": self.score, "label": self.query, "box": {"xmin": xmin, "ymin": ymin, "xmax": xmax, "ymax": ymax}}


def to_detections(out: dict, sizes: list[tuple[int, int]], labels: list[str], post: PostProcess,
                  to_original=None) -> list[list[Detection]]:
    """`predict` outputs -> per-image Detections, negatives' vetoes applied (the demo re-filters kept
    outputs with it, without a forward pass). `to_original`: the preprocessor's box inverse."""
    results = []
    for i, dets in enumerate(post(out, sizes, to_original)):
        if "negative_veto" in out:
            dets = drop_vetoed(dets, out["negative_veto"][i])
        results.append(
            [
                Detection([round(v, BOX_DECIMALS) for v in box.tolist()], round(float(s), SCORE_DECIMALS), int(l),
                          labels[int(l)])
                for box, s, l in zip(dets["boxes"], dets["scores"], dets["labels"])
            ]
        )
    return results


def image_record(path: str, size: tuple[int, int], model: str, untrained: bool, detections: list[Detection]) -> dict:
    """One image's entry of `ovdet detect --out` (the demo's JSON download is the same)."""
    width, height = size
    return {"path": path, "width": width, "height": height, "model": model, "untrained": untrained,
            "detections": [d.to_dict() for d in detections]}


def to_supervision(detections: list[Detection]):
    """An image's detections as `supervision.Detections` (needs `pip install supervision`)."""
    try:
        import numpy as np
        import supervision as sv
    except ImportError:
        raise ImportError("to_supervision needs the optional package supervision: pip install supervision") from None
    return sv.Detections(
        xyxy=np.array([d.box for d in detections], dtype=np.float32).reshape(-1, 4),
        confidence=np.array([d.score for d in detections], dtype=np.float32),
        class_id=np.array([d.label for d in detections], dtype=int),
        data={"class_name": np.array([d.query for d in detections], dtype=object)},
    )
