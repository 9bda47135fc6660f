"""ByteTrack over ovdet's detections: a stable `track_id` per object across the frames of a video.

ByteTrack is Roboflow's (`trackers.ByteTrackTracker`, the tracker `supervision` moved its `ByteTrack` to and
itself imports from version 0.27 on); it reads `supervision.Detections`. Tracking is class-agnostic, so an
object whose best query flips between frames (circle, then octagon) keeps its id.

A box that overlaps a better-scoring box of the same frame by more than `duplicate_iou` is taken for a second
box on the same object and is not tracked (its `track_id` is None): fed to ByteTrack, such a duplicate starts a
tentative track that then competes with the object's own track for the next frame's box (ByteTrack matches
high-score boxes against confirmed and tentative tracks together), and the object's id switches.
"""

from __future__ import annotations

import numpy as np
import torch

from ovdet.box_ops import nms
from ovdet.errors import OvdetError
from ovdet.models.detection import Detection, to_supervision


class FrameTracker:
    """Assign track ids to each frame's detections, frame after frame.

    Args:
        fps: frames per second of the frames given (after any stride), so `lost_seconds` is in real time.
        threshold: the detection score a new track needs (ovdet's own threshold: every reported box may start one).
        lost_seconds: how long a track lives on unseen (occlusion, a missed frame) before its id is retired.
        min_frames: consecutive frames a new object must be seen in before it gets an id (one-frame false
            positives get none).
        min_iou: the overlap a detection needs with a track's predicted box to continue it.
        duplicate_iou: a box overlapping a better one by more than this is a duplicate, left untracked.
    """

    def __init__(self, fps: float, threshold: float, lost_seconds: float = 1.0, min_frames: int = 2,
                 min_iou: float = 0.1, duplicate_iou: float = 0.3):
        self.duplicate_iou = duplicate_iou
        try:
            from trackers import ByteTrackTracker
        except ImportError:
            raise OvdetError("tracking needs the package trackers (ByteTrack): pip install 'ovdet[video]' then "
                             "pip install --no-deps trackers (its opencv-python would clash with the headless "
                             "OpenCV ovdet uses), or pass --no-track") from None
        self._tracker = ByteTrackTracker(
            lost_track_buffer=max(1, round(lost_seconds * 30)),  # counted in 30 fps frames, scaled by frame_rate
            frame_rate=fps, track_activation_threshold=threshold, minimum_consecutive_frames=min_frames,
            minimum_iou_threshold=min_iou, high_conf_det_threshold=threshold,
        )  # fmt: skip

    def update(self, detections: list[Detection]) -> list[int | None]:
        """One frame's detections -> their track ids, in the same order (None: not (yet) part of a track)."""
        kept = distinct_boxes(detections, self.duplicate_iou)
        dets = to_supervision([detections[i] for i in kept])
        dets.data["index"] = np.array(kept, dtype=int)
        tracked = self._tracker.update(dets)
        ids: list[int | None] = [None] * len(detections)
        for index, track_id in zip(tracked.data.get("index", []), tracked.tracker_id):
            ids[int(index)] = int(track_id) if track_id >= 0 else None
        return ids


def distinct_boxes(detections: list[Detection], iou: float) -> list[int]:
    """Indices of the detections no better-scoring one overlaps by more than `iou` (class-agnostic NMS)."""
    if not detections:
        return []
    boxes = torch.tensor([d.box for d in detections], dtype=torch.float32)  # [N, 4] xyxy
    scores = torch.tensor([d.score for d in detections], dtype=torch.float32)  # [N]
    return sorted(nms(boxes, scores, iou).tolist())
