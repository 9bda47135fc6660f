"""Video in and out: what counts as a video, one clear line for every source that cannot be read, frames with
their index and time, and annotated videos written whole, marked, and never over a user's file."""

import av
import numpy as np
import pytest
from PIL import Image

from ovdet.errors import OvdetError
from ovdet.video.video_source import VideoSource, is_video
from ovdet.video.video_writer import VideoWriter, check_video_output, video_is_ours


def write_plain_video(path, frames=6, size=(64, 48), fps=10, fmt=None):
    """A video made with PyAV directly: a user's file, without ovdet's mark."""
    with av.open(str(path), "w", format=fmt) as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        for i in range(frames):
            pixels = np.full((size[1], size[0], 3), 20 * i, np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")))
        container.mux(stream.encode())
    return path


def test_is_video_by_suffix_and_by_probing(tmp_path):
    assert is_video(tmp_path / "later.mp4")  # by suffix, before it exists (the CLI branches on it)
    Image.new("RGB", (8, 8)).save(tmp_path / "photo.png")
    assert not is_video(tmp_path / "photo.png")
    probed = write_plain_video(tmp_path / "recording.bin", fmt="matroska")
    assert is_video(probed)
    Image.new("RGB", (8, 8)).save(tmp_path / "still.bin", format="PNG")  # a still picture is not a video
    assert not is_video(tmp_path / "still.bin")
    (tmp_path / "notes.dat").write_text("hello")
    assert not is_video(tmp_path / "notes.dat")


@pytest.mark.parametrize("make, message", [
    (lambda d: d / "missing.mp4", r"^video '.*missing\.mp4' not found: pass a video file"),
    (lambda d: d, r"is a folder"),
    (lambda d: (d / "fake.mp4").write_text("not a video") and d / "fake.mp4", r"^'.*fake\.mp4' is not a video PyAV can decode"),
    (lambda d: Image.new("RGB", (8, 8)).save(d / "pic.mp4", format="PNG") or d / "pic.mp4", r"holds no video stream"),
])  # fmt: skip
def test_a_source_that_cannot_be_read_is_one_clear_line(tmp_path, make, message):
    with pytest.raises(OvdetError, match=message) as err:
        VideoSource(make(tmp_path))
    assert "\n" not in str(err.value)


def test_an_unavailable_webcam_is_one_clear_line(monkeypatch):
    monkeypatch.setattr("ovdet.video.video_source.webcam_input", lambda i: (f"/nonexistent/video{i}", "video4linux2"))
    with pytest.raises(OvdetError, match=r"^webcam 7 \(/nonexistent/video7\) cannot be opened \(.+\); connect a camera"):
        VideoSource(7)


def test_frames_keep_their_index_and_time_through_stride_and_max_frames(tmp_path):
    clip = write_plain_video(tmp_path / "clip.mp4", frames=10, fps=5)
    with VideoSource(clip) as video:
        assert video.fps == 5 and video.frame_count == 10 and video.size == (64, 48)
        frames = list(video.frames(stride=3))
    assert [f.index for f in frames] == [0, 3, 6, 9]
    assert [f.time for f in frames] == pytest.approx([0.0, 0.6, 1.2, 1.8])
    assert frames[1].image.mode == "RGB" and frames[1].image.size == (64, 48)
    with VideoSource(clip) as video:
        assert [f.index for f in video.frames(stride=2, max_frames=2)] == [0, 2]


def test_written_video_is_marked_decodes_whole_and_pads_odd_sizes(tmp_path):
    out = tmp_path / "out.mkv"
    with VideoWriter(out, fps=12) as writer:
        for i in range(7):
            writer.write(Image.new("RGB", (31, 21), (30 * i, 0, 0)))
    assert video_is_ours(out)
    with av.open(str(out)) as container:
        frames = list(container.decode(video=0))
    assert len(frames) == 7 and (frames[0].width, frames[0].height) == (32, 22)


def test_a_failed_write_leaves_the_old_video_and_no_frames_write_no_file(tmp_path):
    out = tmp_path / "out.mp4"
    with VideoWriter(out, fps=5) as writer:
        writer.write(np.zeros((16, 16, 3), np.uint8))
    before = out.read_bytes()
    with pytest.raises(RuntimeError), VideoWriter(out, fps=5) as writer:
        writer.write(np.zeros((16, 16, 3), np.uint8))
        raise RuntimeError("crash mid-way")
    assert out.read_bytes() == before
    with VideoWriter(tmp_path / "empty.mp4", fps=5):
        pass
    assert not (tmp_path / "empty.mp4").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]


def test_output_video_refuses_a_users_file_an_input_and_other_suffixes(tmp_path):
    user = write_plain_video(tmp_path / "holiday.mp4")
    with pytest.raises(OvdetError, match=r"^--out-video '.*holiday\.mp4' exists and was not written by ovdet"):
        check_video_output(user, "--out-video")
    assert check_video_output(user, "--out-video", overwrite=True) == user
    with pytest.raises(OvdetError, match="is the input video"):
        check_video_output(user, "--out-video", inputs=[user], overwrite=True)
    with pytest.raises(OvdetError, match=r"writes \.mp4, \.mov, \.mkv videos"):
        check_video_output(tmp_path / "out.avi", "--out-video")
    with VideoWriter(tmp_path / "ours.mp4", fps=5) as writer:
        writer.write(np.zeros((16, 16, 3), np.uint8))
    check_video_output(tmp_path / "ours.mp4", "--out-video")  # ovdet's own: replaced without --overwrite


def test_a_cut_off_file_gives_the_frames_before_the_cut(tmp_path):
    whole = tmp_path / "whole.mkv"
    with VideoWriter(whole, fps=10) as writer:
        for i in range(30):
            writer.write(np.random.default_rng(i).integers(0, 255, (48, 64, 3), dtype=np.uint8))
    data = whole.read_bytes()
    (tmp_path / "cut.mkv").write_bytes(data[: len(data) // 2])
    with VideoSource(tmp_path / "cut.mkv") as video:
        frames = list(video.frames())
    assert 1 <= len(frames) < 30 and [f.index for f in frames] == list(range(len(frames)))
    (tmp_path / "cut.mp4").write_bytes(data[:200])  # too little to read even a header
    with pytest.raises(OvdetError, match="is not a video PyAV can decode"):
        VideoSource(tmp_path / "cut.mp4")


def test_a_camera_stamps_by_the_clock_and_its_times_count_from_its_first_frame(tmp_path, monkeypatch):
    from fractions import Fraction

    stream_file = tmp_path / "camera.mkv"  # stands in for /dev/video3: pts from the clock, 5000 s into the day
    with av.open(str(stream_file), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 10)
        for i in range(4):
            frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), 40 * i, np.uint8), format="rgb24")
            frame.pts, frame.time_base = 50000 + i, Fraction(1, 10)
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    with VideoSource(stream_file) as video:
        assert next(iter(video.frames())).time == pytest.approx(5000.0)  # a file keeps its own times
    monkeypatch.setattr("ovdet.video.video_source.webcam_input", lambda i: (str(stream_file), "matroska"))
    with VideoSource(3) as camera:
        assert camera.name == "webcam 3" and camera.frame_count is None
        assert [f.time for f in camera.frames()] == pytest.approx([0.0, 0.1, 0.2, 0.3])
