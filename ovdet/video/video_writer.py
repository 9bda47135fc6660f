"""Video files ovdet writes: H.264 in mp4/mkv/mov, written whole or not at all, carrying ovdet's mark.

The mark is the container tag `written_by` (mp4 and mov keep custom tags through `movflags=use_metadata_tags`),
so `ovdet detect clip.mp4 --out-video out.mp4` replaces an earlier `out.mp4` of its own, and refuses, in one
line, a video the user made (unless --overwrite).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Self

import numpy as np
from PIL import Image

from ovdet.errors import OvdetError
from ovdet.file_mark import MARK_KEY, MARK_VALUE, is_mark
from ovdet.safe_write import atomic_writer

CONTAINERS = {".mp4": "mp4", ".mov": "mov", ".mkv": "matroska"}  # suffix -> PyAV container format
MUXER_OPTIONS = {"mp4": {"movflags": "use_metadata_tags"}, "mov": {"movflags": "use_metadata_tags"}}


def video_is_ours(path: str | Path) -> bool:
    """True when the video at `path` carries ovdet's mark (never raises)."""
    import av

    try:
        with av.open(str(path)) as container:
            tags = {k.lower(): v for k, v in container.metadata.items()}
    except Exception:  # noqa: BLE001 - any reader failure means "not provably ours"
        return False
    return is_mark(tags.get(MARK_KEY))


def check_video_output(path: str | Path, option: str, inputs: list = (), overwrite: bool = False) -> Path:
    """Refuse, in one line, an output video that is an input, has a suffix ovdet cannot write, is a folder,
    or exists without ovdet's mark (unless `overwrite`)."""
    path = Path(path)
    if path.suffix.lower() not in CONTAINERS:
        raise OvdetError(f"{option} '{path}': ovdet writes {', '.join(CONTAINERS)} videos; name a file ending so")
    if path.is_dir():
        raise OvdetError(f"{option} '{path}' is a folder; name a file such as '{path / 'tracked.mp4'}'")
    for source in inputs:
        if isinstance(source, (str, Path)) and Path(source).exists() and path.exists() and path.samefile(source):
            raise OvdetError(f"{option} '{path}' is the input video; writing it would destroy it: choose another path")
    if path.exists() and not overwrite and not video_is_ours(path):
        raise OvdetError(f"{option} '{path}' exists and was not written by ovdet; ovdet replaces only files it "
                         "wrote: choose a new path or pass --overwrite to replace it")
    return path


class VideoWriter:
    """Encode RGB frames to `path` (a context manager); the file appears only when the block ends cleanly.

    Args:
        fps: frames per second of the written video.
        crf: H.264 quality (lower is better; 18 is visually lossless, 23 the default).
    """

    def __init__(self, path: str | Path, fps: float, crf: int = 20):
        self.path = Path(path)
        fmt = CONTAINERS.get(self.path.suffix.lower())
        if fmt is None:
            raise OvdetError(f"'{self.path}': ovdet writes {', '.join(CONTAINERS)} videos; name a file ending so")
        self.format, self.fps, self.crf = fmt, fps, crf
        self.frames = 0
        self._file = self._container = self._stream = None

    def __enter__(self) -> Self:
        import av

        self._atomic = atomic_writer(self.path, "wb")
        self._file = self._atomic.__enter__()
        self._container = av.open(self._file, "w", format=self.format, options=MUXER_OPTIONS.get(self.format, {}))
        self._container.metadata[MARK_KEY] = MARK_VALUE
        return self

    def write(self, image: Image.Image | np.ndarray) -> None:
        """One RGB frame ([H, W, 3] uint8 or PIL); odd sizes are padded by a pixel (H.264 needs even ones)."""
        import av

        pixels = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image)  # [H, W, 3]
        height, width = pixels.shape[:2]
        pad_h, pad_w = height % 2, width % 2
        if pad_h or pad_w:
            pixels = np.pad(pixels, ((0, pad_h), (0, pad_w), (0, 0)))
        if self._stream is None:
            self._stream = self._container.add_stream("libx264", rate=_rate(self.fps), options={"crf": str(self.crf)})
            self._stream.width, self._stream.height = pixels.shape[1], pixels.shape[0]
            self._stream.pix_fmt = "yuv420p"
        elif (pixels.shape[1], pixels.shape[0]) != (self._stream.width, self._stream.height):
            raise OvdetError(f"frame {self.frames} is {width}x{height}, the video {self._stream.width}x"
                             f"{self._stream.height}: a video keeps one size")
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(pixels), format="rgb24")
        self._container.mux(self._stream.encode(frame))
        self.frames += 1

    def __exit__(self, exc_type, exc, tb) -> None:
        """Finish the file; after an error in the block, or with no frame written, the target stays as it was."""
        if self._stream is None:  # nothing was encoded: write no file
            with contextlib.suppress(Exception):
                self._container.close()
            empty = OvdetError(f"no frames to write to '{self.path}'")
            self._atomic.__exit__(exc_type or OvdetError, exc or empty, tb)
            return
        try:
            if exc_type is None:
                self._container.mux(self._stream.encode())  # flush the encoder's delayed frames
            self._container.close()
        except BaseException as err:
            self._atomic.__exit__(type(err), err, err.__traceback__)
            raise
        self._atomic.__exit__(exc_type, exc, tb)


def _rate(fps: float):
    """fps as the exact fraction PyAV wants (29.97 -> 30000/1001)."""
    from fractions import Fraction

    return Fraction(fps).limit_denominator(1001)
