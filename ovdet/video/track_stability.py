"""How well track ids hold: per true object, the fraction of its frames in which it keeps its majority id.

Each frame, a true object is matched to the detection that overlaps it most (IoU >= `min_iou`); the track id
of that detection is the object's id in that frame. A frame where the object is missed, or matched to a
detection with no id, counts against it, so `kept` measures detection and tracking together; `kept_when_seen`
counts only the frames where it was matched to a tracked detection (tracking alone).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass

import torch
from torchvision.ops import box_iou


@dataclass
class ObjectStability:
    identity: int
    shape: str
    frames: int  # frames the object is in
    tracked: int  # frames it was matched to a detection with a track id
    majority_id: int | None  # its most frequent track id
    kept: float  # frames with the majority id / frames
    kept_when_seen: float  # frames with the majority id / tracked frames
    ids: int  # distinct track ids it was given

    def to_dict(self) -> dict:
        return asdict(self)


def track_stability(truth: list[dict], frames: list[dict], min_iou: float = 0.5) -> list[ObjectStability]:
    """Per true object, how constant its track id stays.

    Args:
        truth: per frame {"frame", "objects": [{"id", "shape", "box": xyxy}]} (`FrameTruth.to_dict()`).
        frames: the per-frame records of `detect_video`'s JSON ({"frame", "detections": [{"box", "track_id"}]}).
    """
    by_index = {rec["frame"]: rec["detections"] for rec in frames}
    seen: dict[int, list[int | None]] = {}
    shapes: dict[int, str] = {}
    for rec in truth:
        dets = by_index.get(rec["frame"], [])
        objects = rec["objects"]
        if not objects:
            continue
        true_boxes = torch.tensor([o["box"] for o in objects], dtype=torch.float32).reshape(-1, 4)  # [T, 4]
        det_boxes = torch.tensor([d["box"] for d in dets], dtype=torch.float32).reshape(-1, 4)  # [D, 4]
        iou = box_iou(true_boxes, det_boxes)  # [T, D]
        for t, obj in enumerate(objects):
            shapes[obj["id"]] = obj["shape"]
            best = int(iou[t].argmax()) if len(dets) else -1
            track = dets[best].get("track_id") if best >= 0 and float(iou[t, best]) >= min_iou else None
            seen.setdefault(obj["id"], []).append(track)
    results = []
    for identity, ids in sorted(seen.items()):
        counts = Counter(i for i in ids if i is not None)
        majority, hits = counts.most_common(1)[0] if counts else (None, 0)
        tracked = sum(counts.values())
        results.append(ObjectStability(identity, shapes[identity], len(ids), tracked, majority,
                                       round(hits / len(ids), 4), round(hits / tracked, 4) if tracked else 0.0,
                                       len(counts)))
    return results
