"""ByteTrack over detections (`FrameTracker`) and the id-stability measure, on synthetic boxes."""

import pytest

from ovdet.models.detection import Detection
from ovdet.video.frame_tracker import FrameTracker
from ovdet.video.track_stability import track_stability


def moving(frame: int) -> list[Detection]:
    """Two objects sliding towards each other's lanes, one label flipping every other frame."""
    a = [10 + 4 * frame, 10, 50 + 4 * frame, 50]
    b = [200 - 3 * frame, 100, 240 - 3 * frame, 140]
    return [Detection(a, 0.8, frame % 2, "circle" if frame % 2 == 0 else "octagon"), Detection(b, 0.6, 2, "square")]


def test_each_object_keeps_one_id_even_when_its_label_flips():
    tracker = FrameTracker(fps=10, threshold=0.3)
    ids = [tracker.update(moving(t)) for t in range(20)]
    assert ids[0] == [None, None]  # a new object needs two frames before it gets an id
    assert len({i[0] for i in ids[1:]}) == 1 and len({i[1] for i in ids[1:]}) == 1
    assert ids[1][0] != ids[1][1] and None not in ids[1]


def test_ids_are_given_in_the_order_of_the_detections_passed():
    tracker = FrameTracker(fps=10, threshold=0.3)
    for t in range(3):
        forward = tracker.update(moving(t))
    backward = tracker.update(list(reversed(moving(3))))
    assert backward == list(reversed(forward))


def test_a_track_survives_a_short_gap_and_empty_frames_are_fine():
    tracker = FrameTracker(fps=10, threshold=0.3, lost_seconds=1.0)
    first = [tracker.update(moving(t))[0] for t in range(5)]
    assert tracker.update([]) == []
    after = tracker.update(moving(6))[0]
    assert after == first[-1]


def truth_frames(n):
    return [{"frame": t, "objects": [{"id": 0, "shape": "circle", "box": [t, 0, t + 20, 20]},
                                     {"id": 1, "shape": "square", "box": [100, t, 120, t + 20]}]} for t in range(n)]


def test_stability_counts_switches_misses_and_untracked_frames():
    records = []
    for t in range(10):
        circle = {"box": [t + 1, 0, t + 21, 20], "track_id": 5 if t < 8 else 9}  # switches for the last 2 frames
        square = {"box": [100, t, 120, t + 20], "track_id": None if t == 0 else 3}
        dets = [circle] + ([square] if t != 4 else [])  # the square is missed in frame 4
        records.append({"frame": t, "detections": dets + [{"box": [300, 300, 320, 320], "track_id": 1}]})
    circle, square = track_stability(truth_frames(10), records)
    assert (circle.majority_id, circle.kept, circle.ids, circle.tracked) == (5, 0.8, 2, 10)
    assert (square.majority_id, square.kept, square.kept_when_seen, square.tracked) == (3, 0.8, 1.0, 8)


def test_a_detection_that_barely_overlaps_is_not_the_object():
    records = [{"frame": 0, "detections": [{"box": [15, 15, 40, 40], "track_id": 1}]}]
    circle, _ = track_stability(truth_frames(1), records)
    assert circle.tracked == 0 and circle.kept == pytest.approx(0.0) and circle.majority_id is None


def test_a_duplicate_box_does_not_steal_the_objects_id():
    """A second, weaker box on the same object (seen on the embedded model's triangles) once started a tentative
    track that took the object's box in the next frame: the object's id switched."""
    def frame(t):
        x = 10 + 6 * t
        dets = [Detection([x, 10, x + 40, 50], 0.6, 0, "triangle")]
        if t == 5:  # a duplicate just ahead of the object, where it will be next frame
            dets.append(Detection([x + 6, 10, x + 46, 50], 0.45, 0, "triangle"))
        return dets

    tracker = FrameTracker(fps=15, threshold=0.36)
    ids = [tracker.update(frame(t)) for t in range(12)]
    assert ids[5][1] is None  # the duplicate is not a new object
    assert len({i[0] for i in ids[1:]}) == 1
