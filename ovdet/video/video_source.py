"""Frames from a video file or a webcam, decoded with PyAV, each with its index and time in seconds.

Every way a source can fail to open (missing file, a file that is no video, a video with no picture, no
camera at that index) is one `OvdetError` line naming the source and the fix, raised before any model loads.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Self

from PIL import Image

from ovdet.errors import OvdetError, OvdetWarning

VIDEO_SUFFIXES = {".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".wmv", ".flv", ".ts", ".3gp",
                  ".ogv"}
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}  # `ovdet detect`'s images
STILL_FORMATS = ("image2", "_pipe")  # FFmpeg demuxers of single pictures (png_pipe, jpeg_pipe, ...)
WEBCAM_FPS = 30.0  # what a camera that does not say its rate is taken to run at


def is_video(path: str | Path) -> bool:
    """True for a video file: by suffix, else (an unknown suffix) by PyAV finding a moving picture in it."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in VIDEO_SUFFIXES:
        return True
    if suffix in IMAGE_SUFFIXES or not path.is_file():
        return False
    import av

    try:
        with av.open(str(path)) as container:
            return bool(container.streams.video) and not _is_still(container)
    except (av.FFmpegError, OSError, UnicodeDecodeError):
        return False


@dataclass
class Frame:
    index: int  # position in the source, counting every decoded frame (strided-over ones too)
    time: float  # seconds from the start
    image: Image.Image  # RGB


def webcam_input(index: int) -> tuple[str, str]:
    """(FFmpeg device name, input format) of camera `index` on this platform."""
    if sys.platform.startswith("linux"):
        return f"/dev/video{index}", "video4linux2"
    if sys.platform == "darwin":
        return str(index), "avfoundation"
    if sys.platform == "win32":
        return f"video={index}", "dshow"  # dshow names cameras; an index works only for a camera so named
    raise OvdetError(f"--webcam is not supported on {sys.platform}; record a file and pass it instead")


class VideoSource:
    """An open video file or webcam (a context manager); `frames()` yields `Frame`s.

    Args:
        source: a file path, or an int: the webcam of that index.
    Raises:
        OvdetError: the source cannot be opened or holds no video stream (one line).
    """

    def __init__(self, source: str | Path | int):
        import av

        self.is_webcam = isinstance(source, int)
        if self.is_webcam:
            device, fmt = webcam_input(source)
            self.name = f"webcam {source}"
            try:
                self.container = av.open(device, format=fmt)
            except (av.FFmpegError, OSError) as err:
                raise OvdetError(f"webcam {source} ({device}) cannot be opened ({_reason(err)}); connect a camera, "
                                 "or pass --webcam N for another one") from None
        else:
            path = Path(source)
            self.name = str(path)
            if not path.is_file():
                what = "is a folder" if path.is_dir() else "not found"
                raise OvdetError(f"video '{path}' {what}: pass a video file such as clip.mp4")
            try:
                self.container = av.open(str(path))
            except (av.FFmpegError, OSError, UnicodeDecodeError) as err:
                raise OvdetError(f"'{path}' is not a video PyAV can decode ({_reason(err)}): pass an mp4, mkv, "
                                 "mov, webm or avi file") from None
            if not self.container.streams.video or _is_still(self.container):
                self.container.close()
                raise OvdetError(f"'{path}' holds no video stream (a still image or audio only): pass a video, "
                                 "or detect on images without --webcam")
        self.stream = self.container.streams.video[0]
        self.stream.thread_type = "AUTO"  # decode with FFmpeg's threads, beside the model's

    @property
    def fps(self) -> float:
        rate = self.stream.average_rate or self.stream.guessed_rate
        return float(rate) if rate else WEBCAM_FPS

    @property
    def frame_count(self) -> int | None:
        """Frames in the file as its header says (None for a webcam or when unknown)."""
        return (self.stream.frames or None) if not self.is_webcam else None

    @property
    def size(self) -> tuple[int, int]:
        return self.stream.codec_context.width, self.stream.codec_context.height

    def frames(self, stride: int = 1, max_frames: int | None = None) -> Iterator[Frame]:
        """Every `stride`-th frame, at most `max_frames` of them. A file that breaks off mid-way ends the
        stream with an `OvdetWarning` naming the frame, keeping what came before."""
        import av

        kept = 0
        index = -1
        start = None  # a camera stamps frames with the clock; its times count from its first frame
        decoded = self.container.decode(self.stream)
        while max_frames is None or kept < max_frames:
            try:
                frame = next(decoded)
            except StopIteration:
                return
            except (av.FFmpegError, OSError) as err:
                warnings.warn(f"{self.name}: decoding stopped after frame {index} ({_reason(err)}); "
                              "the frames before it are kept", OvdetWarning, stacklevel=2)
                return
            index += 1
            if index % stride:
                continue
            kept += 1
            time = float(frame.time) if frame.time is not None else index / self.fps
            start = (time if self.is_webcam else 0.0) if start is None else start
            time -= start
            yield Frame(index, round(time, 4), frame.to_image())

    def close(self) -> None:
        self.container.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _is_still(container) -> bool:
    name = container.format.name
    return any(part == "image2" or part.endswith("_pipe") for part in name.split(","))


def _reason(err: Exception) -> str:
    """FFmpeg's own words, without the path it repeats."""
    return getattr(err, "strerror", None) or str(err)
