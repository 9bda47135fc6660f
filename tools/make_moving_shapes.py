"""Write a clip of ShapeWorld shapes moving on known paths, and its per-frame truth (boxes and identities).

    python tools/make_moving_shapes.py clip.mp4                      # 90 frames, 320x240, 4 shapes, 15 fps
    python tools/make_moving_shapes.py long.mp4 --frames 600 --size 640x480 --seed 3

The truth goes beside the clip as `clip.truth.json`; `tools/measure_video_tracking.py` scores track ids with it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ovdet.errors import OvdetError
from ovdet.video.moving_shapes import DEFAULT_SHAPES, write_moving_shapes


def parse_size(value: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in value.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad size {value!r}: expected WIDTHxHEIGHT, e.g. 320x240") from None
    return width, height


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("clip", type=Path, help="the video to write (.mp4, .mkv or .mov)")
    p.add_argument("--frames", type=int, default=90)
    p.add_argument("--size", type=parse_size, default=(320, 240), metavar="WxH", help="even sizes, >= 64x64")
    p.add_argument("--objects", type=int, default=4, help="moving shapes, one lane each (1..8)")
    p.add_argument("--shapes", nargs="+", default=list(DEFAULT_SHAPES), help="shape names, taken in turn")
    p.add_argument("--fps", type=float, default=15.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true", help="replace files ovdet did not write")
    args = p.parse_args(argv)
    try:
        truth = write_moving_shapes(args.clip, args.frames, *args.size, args.objects, tuple(args.shapes), args.seed,
                                    args.fps, args.overwrite)
    except OvdetError as err:
        print(f"make_moving_shapes: error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {args.clip} ({args.frames} frames, {args.size[0]}x{args.size[1]}) and {truth}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
