"""Detect (and track) free-text queries in a video file or a webcam stream: per-frame JSON and an annotated video.

Frames go through `ovdet.pipeline.detect_stream` like images do (batched, one query embedding for the whole
run), so a frame gets exactly the boxes `ovdet detect` gives the same picture. Track ids come from ByteTrack
(`FrameTracker`). Outputs are checked before anything slow: an existing file ovdet did not write is refused
in one line unless `overwrite`.
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from ovdet.errors import OvdetError
from ovdet.file_mark import marked, sidecar_path
from ovdet.safe_write import atomic_write_text, check_output_path
from ovdet.video.video_source import Frame, VideoSource
from ovdet.video.video_writer import VideoWriter, check_video_output

if TYPE_CHECKING:  # torch is imported only once a run starts: refusals come first, in a fraction of a second
    from ovdet.models.detection import Detection


@dataclass
class VideoSummary:
    """What a run did; `frames` holds the per-frame records also written to `out_json`."""

    source: str
    frames_done: int
    seconds: float  # wall time from the first frame decoded to the last one written
    tracks: int  # distinct track ids given
    interrupted: bool  # stopped by Ctrl-C (a webcam runs until then); what came before is kept
    frames: list[dict] = field(default_factory=list, repr=False)

    @property
    def fps(self) -> float:
        return self.frames_done / self.seconds if self.seconds > 0 else 0.0


def check_video_run(source: str | Path | int, out_json: str | Path | None = None,
                    out_video: str | Path | None = None, overwrite: bool = False, stride: int = 1,
                    max_frames: int | None = None) -> None:
    """Everything that can be refused before a model loads: option values, the outputs (an input, or a file
    ovdet did not write, is never replaced unless `overwrite`) and the source (opened and closed)."""
    check_video_outputs(source, out_json, out_video, overwrite, stride, max_frames)
    with VideoSource(source):
        pass


def check_video_outputs(source: str | Path | int, out_json: str | Path | None, out_video: str | Path | None,
                        overwrite: bool, stride: int, max_frames: int | None) -> None:
    """`check_video_run` without opening the source (a webcam is opened once per run)."""
    if stride < 1:
        raise OvdetError(f"--stride must be >= 1, got {stride}")
    if max_frames is not None and max_frames < 1:
        raise OvdetError(f"--max-frames must be >= 1, got {max_frames}")
    inputs = [] if isinstance(source, int) else [source]
    if out_json is not None:
        check_output_path(out_json, "--out", inputs=inputs, overwrite=overwrite)
        if sidecar_path(out_json).exists():  # a list ovdet wrote before leaves one; a JSON object needs none
            check_output_path(sidecar_path(out_json), "--out's sidecar", inputs=inputs, overwrite=overwrite)
    if out_video is not None:
        check_video_output(out_video, "--out-video", inputs=inputs, overwrite=overwrite)
        if out_json is not None and Path(out_json).resolve() == Path(out_video).resolve():
            raise OvdetError(f"--out and --out-video both name '{out_json}': give each its own file")


def detect_video(detector, source: str | Path | int, queries: list[str], *, threshold: float | None = None,
                 out_json: str | Path | None = None, out_video: str | Path | None = None, batch_size: int = 4,
                 track: bool = True, stride: int = 1, max_frames: int | None = None, progress: bool = True,
                 overwrite: bool = False, model_name: str | None = None, **detect_options) -> VideoSummary:
    """Detect `queries` in every `stride`-th frame of `source` (a video file, or an int: that webcam).

    Args:
        threshold: None uses the model's own.
        out_json: the per-frame records as one marked JSON object ({..., "frames": [{"frame", "time",
            "detections": [{"box" xyxy px, "score", "label", "query", "track_id"}]}]}).
        out_video: the frames with boxes, query, score and track id drawn (.mp4, .mkv or .mov).
        track: give each object a stable `track_id` (ByteTrack); without it every `track_id` is None.
        progress: a bar counting frames, with frames per second.
        detect_options: the rest of `ovdet.pipeline.detect_stream`'s options (nms, templates, negatives, ...).
    Returns:
        A `VideoSummary`; a Ctrl-C ends the run early and keeps (and writes) what was done.
    """
    check_video_outputs(source, out_json, out_video, overwrite, stride, max_frames)
    threshold = detector.threshold if threshold is None else threshold
    with VideoSource(source) as video:
        run = _Run(detector, video, stride, track, threshold)
        writer = VideoWriter(out_video, run.fps) if out_video is not None else contextlib.nullcontext()
        total = _expected_frames(video.frame_count, stride, max_frames)
        with writer as sink, _progress_bar(total, progress, video.name) as bar:
            start = time.perf_counter()
            interrupted = run.loop(queries, threshold, batch_size, max_frames, sink, bar, detect_options)
            seconds = time.perf_counter() - start
        summary = VideoSummary(video.name, len(run.records), seconds, len(run.track_ids), interrupted, run.records)
        if out_json is not None:
            header = {"source": video.name, "model": model_name, "untrained": detector.untrained,
                      "width": video.size[0], "height": video.size[1], "fps": round(video.fps, 4),
                      "stride": stride, "threshold": threshold, "tracker": "bytetrack" if track else None,
                      "interrupted": interrupted}
            atomic_write_text(out_json, json.dumps(marked({**header, "frames": run.records}), indent=1))
    return summary


class _Run:
    """One pass over a source: frames in, records (and drawn frames) out, track ids assigned in order."""

    def __init__(self, detector, video: VideoSource, stride: int, track: bool, threshold: float):
        from ovdet.video.frame_tracker import FrameTracker

        self.detector, self.video, self.stride = detector, video, stride
        self.fps = video.fps / stride
        self.tracker = FrameTracker(self.fps, threshold) if track else None
        self.records: list[dict] = []
        self.track_ids: set[int] = set()
        self.pending: dict[int, Frame] = {}

    def frames(self, max_frames: int | None):
        """The decoded frames as images for the pipeline, each remembered by its position until its result."""
        for position, frame in enumerate(self.video.frames(self.stride, max_frames)):
            self.pending[position] = frame
            yield frame.image

    def loop(self, queries, threshold, batch_size, max_frames, sink, bar, detect_options) -> bool:
        """Run to the end of the source; True when a Ctrl-C stopped it."""
        from ovdet.pipeline import detect_stream

        from ovdet.models.detection import UNTRAINED_BANNER

        banner = UNTRAINED_BANNER if self.detector.untrained else None
        try:
            for item in detect_stream(self.detector, self.frames(max_frames), queries, threshold=threshold,
                                      batch_size=batch_size, **detect_options):
                frame = self.pending.pop(item.index)
                ids = self.tracker.update(item.detections) if self.tracker else [None] * len(item.detections)
                self.track_ids.update(i for i in ids if i is not None)
                self.records.append(frame_record(frame, item.detections, ids))
                if sink is not None:
                    sink.write(draw_tracked(item.image, item.detections, ids, banner))
                bar.update(1)
        except KeyboardInterrupt:
            return True
        return False


def frame_record(frame: Frame, detections: list[Detection], track_ids: list[int | None]) -> dict:
    """One frame's entry of the JSON: frame index, time in s, detections with their track ids."""
    return {"frame": frame.index, "time": frame.time,
            "detections": [{**d.to_dict(), "track_id": t} for d, t in zip(detections, track_ids)]}


def draw_tracked(image, detections: list[Detection], track_ids: list[int | None], banner: str | None = None):
    """The frame with each box labelled `query #id score` (ids shown only for tracked boxes)."""
    from ovdet.draw import draw_detections

    named = [replace(d, query=f"{d.query} #{t}" if t is not None else d.query) for d, t in zip(detections, track_ids)]
    return draw_detections(image, named, banner)


def _expected_frames(count: int | None, stride: int, max_frames: int | None) -> int | None:
    total = None if count is None else -(-count // stride)  # ceil: frames 0, stride, 2*stride, ...
    return min(filter(None, (total, max_frames)), default=None)


@contextlib.contextmanager
def _progress_bar(total: int | None, enabled: bool, name: str):
    """tqdm's bar on stderr, counting frames with its rate in frames per second."""
    from tqdm.auto import tqdm

    bar = tqdm(total=total, unit="frame", desc=Path(name).name, disable=not enabled, dynamic_ncols=True)
    try:
        yield bar
    finally:
        bar.close()
