"""Measure `ovdet detect` on video: track-id stability per object and frames per second, on a generated clip.

    python tools/measure_video_tracking.py                         # 300 frames, 320x240, 4 shapes, batch 8
    python tools/measure_video_tracking.py --size 480x360 --objects 6 --shapes circle square triangle hexagon cross ring

Prints a markdown table (one row per object: frames, frames tracked, kept = frames with its majority id /
frames, distinct ids) and the speed of detect + track alone and with the annotated video written.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from ovdet.video.moving_shapes import DEFAULT_SHAPES, write_moving_shapes


def parse_size(value: str) -> tuple[int, int]:
    width, height = (int(v) for v in value.lower().split("x"))
    return width, height


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=300)
    p.add_argument("--size", type=parse_size, default=(320, 240), metavar="WxH")
    p.add_argument("--objects", type=int, default=4)
    p.add_argument("--shapes", nargs="+", default=list(DEFAULT_SHAPES))
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--nms", type=float, default=0.5)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's own)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--model", default=None, help="default: the embedded ShapeWorld model")
    p.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = p.parse_args(argv)

    import torch

    from ovdet.assets import resolve_model
    from ovdet.models.detector import Detector
    from ovdet.video.detect_video import detect_video
    from ovdet.video.track_stability import track_stability

    if args.threads:
        torch.set_num_threads(args.threads)
    detector = Detector.from_pretrained(resolve_model(args.model)).to(args.device)
    queries = list(dict.fromkeys(args.shapes[: args.objects]))
    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(tmp) / "clip.mp4"
        truth = json.loads(write_moving_shapes(clip, args.frames, *args.size, args.objects, tuple(args.shapes),
                                               args.seed).read_text())
        detect_video(detector, clip, queries, max_frames=2 * args.batch_size, progress=False)  # warm-up
        cpu = time.process_time()
        tracked = detect_video(detector, clip, queries, batch_size=args.batch_size, nms=args.nms, progress=False)
        cpu_track = (time.process_time() - cpu) / tracked.frames_done
        cpu = time.process_time()
        drawn = detect_video(detector, clip, queries, batch_size=args.batch_size, nms=args.nms, progress=False,
                             out_video=Path(tmp) / "tracked.mp4")
        cpu_drawn = (time.process_time() - cpu) / drawn.frames_done
    rows = [s.to_dict() for s in track_stability(truth["frames"], tracked.frames)]
    machine = (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
               f"{torch.get_num_threads()} threads, device {args.device}")
    print(f"clip: {args.frames} frames, {args.size[0]}x{args.size[1]}, {args.objects} objects, seed {args.seed}; "
          f"batch {args.batch_size}, nms {args.nms}; {machine}")
    print("| object | shape | frames | tracked | kept (majority id) | kept when tracked | ids |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['identity']} | {r['shape']} | {r['frames']} | {r['tracked']} | {100 * r['kept']:.1f} % | "
              f"{100 * r['kept_when_seen']:.1f} % | {r['ids']} |")
    print(f"detect + track: {tracked.fps:.1f} frames/s ({1000 * cpu_track:.0f} ms CPU time a frame); with the "
          f"annotated video: {drawn.fps:.1f} frames/s ({1000 * cpu_drawn:.0f} ms CPU time a frame); load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    if args.json is not None:
        args.json.write_text(json.dumps({"objects": rows, "fps_track": tracked.fps, "fps_with_video": drawn.fps,
                                         "cpu_s_per_frame": [cpu_track, cpu_drawn],
                                         "machine": machine, "args": {k: str(v) for k, v in vars(args).items()}},
                                        indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
