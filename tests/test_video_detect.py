"""`detect_video` with the embedded default model on a generated clip of moving shapes: one JSON record per
frame, stable track ids, an annotated video with every frame; outputs refused before the model loads."""

import argparse
import json

import av
import pytest

from ovdet.errors import OvdetError
from ovdet.file_mark import is_ours
from ovdet.video.detect_video import check_video_run, detect_video
from ovdet.video.moving_shapes import write_moving_shapes
from ovdet.video.track_stability import track_stability
from ovdet.video.video_writer import video_is_ours

FRAMES = 60  # 0.95 * 60 = 57: two frames of slack beside the first (a new object gets its id on its second)
QUERIES = ["circle", "square", "triangle"]


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clip")
    truth = write_moving_shapes(folder / "clip.mp4", frames=FRAMES, width=256, height=192, count=3, fps=15, seed=0)
    return folder / "clip.mp4", json.loads(truth.read_text())


@pytest.fixture(scope="module")
def detector():
    from ovdet.assets import resolve_model
    from ovdet.models.detector import Detector

    return Detector.from_pretrained(resolve_model(None))


@pytest.fixture(scope="module")
def tracked(clip, detector, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    summary = detect_video(detector, clip[0], QUERIES, out_json=out / "tracks.json", out_video=out / "tracked.mp4",
                           batch_size=4, progress=False, model_name="default")
    return summary, out


def test_one_record_per_frame_with_time_boxes_and_track_ids(tracked):
    summary, out = tracked
    data = json.loads((out / "tracks.json").read_text())
    assert is_ours(out / "tracks.json") and data["tracker"] == "bytetrack" and data["fps"] == 15
    assert [r["frame"] for r in data["frames"]] == list(range(FRAMES)) == [r["frame"] for r in summary.frames]
    assert [r["time"] for r in data["frames"]] == pytest.approx([i / 15 for i in range(FRAMES)], abs=1e-3)
    dets = [d for r in data["frames"] for d in r["detections"]]
    assert dets and set(dets[0]) == {"box", "score", "label", "query", "track_id"}
    assert sum(d["track_id"] is not None for d in dets) >= 0.9 * len(dets)
    assert summary.frames_done == FRAMES and summary.fps > 0 and not summary.interrupted


def test_each_object_keeps_its_id_in_at_least_95_percent_of_frames(tracked, clip):
    summary, _ = tracked
    stability = track_stability(clip[1]["frames"], summary.frames)
    assert len(stability) == 3
    assert len({s.majority_id for s in stability}) == 3  # three objects, three ids
    for s in stability:
        assert s.kept >= 0.95, s


def test_annotated_video_has_every_frame_and_ovdets_mark(tracked):
    _, out = tracked
    with av.open(str(out / "tracked.mp4")) as container:
        frames = list(container.decode(video=0))
    assert len(frames) == FRAMES and (frames[0].width, frames[0].height) == (256, 192)
    assert video_is_ours(out / "tracked.mp4")


def test_no_track_stride_and_max_frames(clip, detector, tmp_path):
    summary = detect_video(detector, clip[0], QUERIES, track=False, stride=5, max_frames=3, progress=False)
    assert [r["frame"] for r in summary.frames] == [0, 5, 10]
    assert all(d["track_id"] is None for r in summary.frames for d in r["detections"])


def test_ctrl_c_keeps_and_writes_what_was_done(clip, detector, tmp_path, monkeypatch):
    from ovdet.video.frame_tracker import FrameTracker

    calls = []
    update = FrameTracker.update

    def interrupted(self, dets):
        calls.append(1)
        if len(calls) == 6:
            raise KeyboardInterrupt
        return update(self, dets)

    monkeypatch.setattr(FrameTracker, "update", interrupted)
    summary = detect_video(detector, clip[0], QUERIES, out_json=tmp_path / "t.json", out_video=tmp_path / "t.mp4",
                           batch_size=2, progress=False)
    assert summary.interrupted and summary.frames_done == 5
    assert json.loads((tmp_path / "t.json").read_text())["interrupted"] is True
    with av.open(str(tmp_path / "t.mp4")) as container:
        assert sum(1 for _ in container.decode(video=0)) == 5


def test_outputs_and_sources_are_refused_before_the_model_loads(clip, tmp_path, monkeypatch):
    from ovdet.cli import detect
    from ovdet.models.detector import Detector
    from ovdet.video.video_command import add_video_arguments, run_video

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded before the refusal")

    monkeypatch.setattr(Detector, "from_pretrained", no_model)
    parser = argparse.ArgumentParser()
    detect.add_parser(parser.add_subparsers())
    sub = parser._subparsers._group_actions[0].choices["detect"]
    if "--webcam" not in sub._option_string_actions:  # until `ovdet detect` adds them itself
        add_video_arguments(sub)
    user_json = tmp_path / "tracks.json"
    user_json.write_text('{"mine": true}')
    args = parser.parse_args(["detect", str(clip[0]), "-q", "circle", "--out", str(user_json)])
    with pytest.raises(OvdetError, match=r"^--out '.*tracks\.json' exists and was not written by ovdet"):
        run_video(args)
    args = parser.parse_args(["detect", str(tmp_path / "gone.mp4"), "-q", "circle"])
    with pytest.raises(OvdetError, match=r"^video '.*gone\.mp4' not found"):
        run_video(args)
    args = parser.parse_args(["detect", str(clip[0]), "-q", "circle", "--stride", "0"])
    with pytest.raises(OvdetError, match="--stride must be >= 1, got 0"):
        run_video(args)
    with pytest.raises(OvdetError, match="--out and --out-video both name"):
        check_video_run(clip[0], tmp_path / "same.mp4", tmp_path / "same.mp4")
    assert user_json.read_text() == '{"mine": true}'


def test_the_cli_branches_on_videos_and_refuses_mixed_inputs(clip, tmp_path):
    from ovdet.video.video_command import is_video_run, video_source

    def args(images, webcam=None, **kw):
        return argparse.Namespace(images=images, webcam=webcam, draw=None, out_format="ovdet", **kw)

    assert is_video_run(args([str(clip[0])])) and is_video_run(args([], webcam=0))
    assert not is_video_run(args(["photo.png", "photos/"]))
    with pytest.raises(OvdetError, match="is a video: pass one video at a time"):
        is_video_run(args([str(clip[0]), "photo.png"]))
    with pytest.raises(OvdetError, match="pass a video file or --webcam, not both"):
        video_source(args([str(clip[0])], webcam=0))
    with pytest.raises(OvdetError, match="--draw writes PNGs of images; for a video pass --out-video"):
        video_source(argparse.Namespace(images=[str(clip[0])], webcam=None, draw=tmp_path, out_format="ovdet"))


def test_a_webcam_runs_the_same_path(clip, detector, tmp_path, monkeypatch):
    monkeypatch.setattr("ovdet.video.video_source.webcam_input", lambda i: (str(clip[0]), "mov"))
    summary = detect_video(detector, 0, QUERIES, max_frames=4, out_json=tmp_path / "cam.json", progress=False)
    data = json.loads((tmp_path / "cam.json").read_text())
    assert data["source"] == "webcam 0" and [r["frame"] for r in data["frames"]] == [0, 1, 2, 3]
    assert summary.frames_done == 4 and any(d["track_id"] is not None for d in data["frames"][-1]["detections"])
