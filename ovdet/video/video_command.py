"""`ovdet detect clip.mp4` and `ovdet detect --webcam`: the video face of `ovdet detect` (options and run).

`ovdet.cli.detect` adds these options with `add_video_arguments` and hands a run to `run_video` when
`is_video_run` says the input is a video or a webcam; everything else about a run (queries, thresholds, the
model) is `ovdet detect`'s own.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ovdet.errors import OvdetError
from ovdet.video.video_source import is_video

VIDEO_EPILOG = """\
Video (a video file as the one input, or --webcam): --out writes one JSON object whose "frames" hold one record
per frame {frame, time (s), detections: [{box, score, label, query, track_id}]}; --out-video writes the frames
with labelled boxes and track ids. A progress bar counts frames per second; Ctrl-C stops a webcam and keeps
what was done.
  ovdet detect clip.mp4 -q circle -q square --out tracks.json --out-video tracked.mp4
  ovdet detect --webcam -q person --out-video webcam.mp4
"""


def add_video_arguments(p: argparse.ArgumentParser) -> None:
    """The options only a video run reads."""
    p.add_argument("--webcam", nargs="?", const=0, default=None, type=int, metavar="INDEX",
                   help="detect on a webcam's stream (camera 0, or INDEX) until Ctrl-C, instead of files")
    p.add_argument("--track", action=argparse.BooleanOptionalAction, default=True,
                   help="video: give each object a stable track_id across frames (ByteTrack)")
    p.add_argument("--out-video", type=Path, default=None, metavar="FILE",
                   help="video: write the frames with boxes, queries, scores and track ids (.mp4, .mkv, .mov)")
    p.add_argument("--max-frames", type=int, default=None, metavar="N", help="video: stop after N frames")
    p.add_argument("--stride", type=int, default=1, metavar="N", help="video: detect on every N-th frame")


def is_video_run(args: argparse.Namespace) -> bool:
    """A webcam, or a single input that is a video file (by suffix, else by PyAV probing it); a video among
    other inputs is refused in one line."""
    images = getattr(args, "images", None) or []
    videos = [item for item in images if is_video(item)]
    if videos and len(images) > 1:
        raise OvdetError(f"'{videos[0]}' is a video: pass one video at a time, not with other inputs")
    return args.webcam is not None or bool(videos)


def video_source(args: argparse.Namespace) -> str | int:
    """The webcam index or the video path; refuses mixing them, and video-only options on image runs."""
    images = getattr(args, "images", None) or []
    if args.webcam is not None and images:
        raise OvdetError(f"--webcam {args.webcam} and input '{images[0]}' given: pass a video file or --webcam, not both")
    if args.draw is not None:
        raise OvdetError("--draw writes PNGs of images; for a video pass --out-video FILE")
    if args.out_format != "ovdet":
        raise OvdetError(f"--out-format {args.out_format} is for images; a video's --out is ovdet's per-frame JSON")
    return args.webcam if args.webcam is not None else images[0]


def run_video(args: argparse.Namespace) -> int:
    """`ovdet detect` on a video or webcam: checks first (before the model loads), then detect and track."""
    from ovdet.assets import resolve_model
    from ovdet.cli import options
    from ovdet.cli.detect import banner, check_inputs, load_exemplars, printable
    from ovdet.text.queries import validate_queries
    from ovdet.video.detect_video import check_video_run, detect_video

    alone = args.vocab_cache is None and not args.exemplars
    queries = validate_queries(args.queries) if args.queries or alone else []
    negatives = validate_queries(args.negatives) if args.negatives else []
    check_inputs(args)
    source = video_source(args)
    overwrite = bool(getattr(args, "overwrite", False))
    check_video_run(source, args.out, args.out_video, overwrite, args.stride, args.max_frames)
    exemplars = load_exemplars(args.exemplars)
    device = options.resolve_device(args.device)

    from ovdet.models.detector import Detector

    model_name = resolve_model(args.model)
    detector = Detector.from_pretrained(model_name).to(device)
    options.apply_scoring(detector, getattr(args, "scoring", "model"))
    options.apply_speed(detector, args.precision, getattr(args, "runtime", "torch"))
    if args.vocab_cache is not None:
        queries = queries or detector.load_vocab(args.vocab_cache)
    if detector.untrained:
        print(f"!! {banner()} ({printable(model_name)})", file=sys.stderr)
    summary = detect_video(
        detector, source, queries, threshold=args.threshold, out_json=args.out, out_video=args.out_video,
        batch_size=args.batch_size, track=args.track, stride=args.stride, max_frames=args.max_frames,
        progress=not args.quiet, overwrite=overwrite, model_name=model_name, nms=args.nms,
        max_detections=args.max_detections, agnostic_nms=args.agnostic_nms, templates=args.templates,
        template_mode=args.template_mode, negatives=negatives, exemplars=exemplars, postprocess=args.postprocess,
    )  # fmt: skip
    stopped = " (stopped by Ctrl-C)" if summary.interrupted else ""
    print(f"{printable(summary.source)}: {summary.frames_done} frames in {summary.seconds:.1f} s "
          f"({summary.fps:.1f} frames/s), {summary.tracks} tracks{stopped}")
    for path in (args.out, args.out_video):
        if path is not None and summary.frames_done:
            print(f"wrote {printable(str(path))}")
    return 0
