"""The generated moving-shapes clip: truth boxes are where the pixels are, paths are continuous, the clip
encodes and decodes with the right frame count, and its files carry ovdet's mark."""

import json

import numpy as np
import pytest

from ovdet.data.shapeworld import COLORS
from ovdet.errors import OvdetError
from ovdet.file_mark import is_ours
from ovdet.video.moving_shapes import (
    plan_objects,
    render_clip,
    truth_path,
    write_moving_shapes,
)
from ovdet.video.video_writer import video_is_ours


def test_truth_boxes_are_where_each_object_is_drawn():
    for pixels, truth in render_clip(12, 192, 160, count=3, seed=5):  # [H, W, 3]
        for identity, box in zip(truth.identities, truth.boxes_xyxy):
            colour = np.array(COLORS[plan_objects(192, 160, 3, seed=5)[identity].color], np.float32)
            near = np.abs(pixels.astype(np.float32) - colour).max(axis=2) < 60  # [H, W]: the object's own colour
            rows, cols = np.flatnonzero(near.any(axis=1)), np.flatnonzero(near.any(axis=0))
            drawn = (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1)
            assert np.allclose(drawn, box, atol=1), (truth.index, identity, drawn, box)


def test_paths_are_continuous_inside_their_lanes_and_fixed_by_the_seed():
    objects = plan_objects(320, 240, 4, seed=2)
    for obj in objects:
        centres = np.array([obj.centre(t, 320) for t in range(200)])  # [T, 2]
        steps = np.abs(np.diff(centres, axis=0))
        assert steps[:, 0].max() <= abs(obj.speed) + 1e-6  # bounces, never jumps
        assert (centres[:, 0] - obj.radius >= 0).all() and (centres[:, 0] + obj.radius <= 320).all()
        assert (centres[:, 1] - obj.radius >= obj.lane[0]).all() and (centres[:, 1] + obj.radius <= obj.lane[1]).all()
        assert len(np.unique(np.sign(np.diff(centres[:, 0])))) == 2  # it did turn at a lane end
    first = [p for p, _ in render_clip(3, 128, 96, count=2, seed=7)]
    again = [p for p, _ in render_clip(3, 128, 96, count=2, seed=7)]
    assert all(np.array_equal(a, b) for a, b in zip(first, again))


def test_written_clip_decodes_with_every_frame_and_its_truth(tmp_path):
    import av

    clip = tmp_path / "clip.mp4"
    truth_file = write_moving_shapes(clip, frames=20, width=128, height=96, count=2, fps=10)
    assert truth_file == truth_path(clip) == tmp_path / "clip.truth.json"
    with av.open(str(clip)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == 20 and frames[0].shape == (96, 128, 3)
    truth = json.loads(truth_file.read_text())
    assert len(truth["frames"]) == 20 and [o["id"] for o in truth["frames"][0]["objects"]] == [0, 1]
    assert is_ours(truth_file) and video_is_ours(clip)
    write_moving_shapes(clip, frames=4, width=128, height=96, count=2)  # ovdet's own files: replaced
    with av.open(str(clip)) as container:
        assert sum(1 for _ in container.decode(video=0)) == 4


def test_a_foreign_file_or_bad_size_is_refused_before_drawing(tmp_path):
    clip = tmp_path / "mine.mp4"
    clip.write_bytes(b"not ovdet's")
    with pytest.raises(OvdetError, match="was not written by ovdet.*--overwrite"):
        write_moving_shapes(clip, frames=2, width=128, height=96)
    assert clip.read_bytes() == b"not ovdet's" and not truth_path(clip).exists()
    with pytest.raises(OvdetError, match="must be even"):
        write_moving_shapes(tmp_path / "odd.mp4", frames=2, width=127, height=96)
    with pytest.raises(OvdetError, match="unknown or no shapes"):
        plan_objects(128, 96, 2, shapes=("blob",))
