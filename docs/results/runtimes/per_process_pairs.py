"""Embedded model, `Detector.detect` on synthetic scenes with 16 names: torch fp32 against `--runtime auto
--precision int8`, each side in its own process, the two processes in turn for several rounds.

Why separate processes: in one process, the runtime that ran last leaves its threads spinning for a while (torch's
OpenMP, OpenVINO's TBB), and on two cores they slow whichever side comes next: in one paired run the torch fp32
detector came out 1.32x faster than the identical torch fp32 reference, and OpenVINO int8 3.17x and 3.74x under two
names. A user runs one runtime per process. Each process: 3 warm-up calls, then the median of 12.

    python docs/results/runtimes/per_process_pairs.py --batch 8 1 --rounds 7
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys

SIDE = """
import sys, time, statistics, torch
from ovdet.assets import DEFAULT_MODEL, resolve_model
from ovdet.benchmark.measure import synthetic_images, synthetic_names
from ovdet.models.detector import Detector
runtime, precision, batch = sys.argv[1], sys.argv[2], int(sys.argv[3])
d = Detector.from_pretrained(resolve_model(DEFAULT_MODEL)).eval()
d.set_precision(precision)
if runtime != "torch":
    d.set_runtime(runtime, precision)
images, names = synthetic_images(batch), synthetic_names(16)
with torch.inference_mode():
    for _ in range(3):
        d.detect(images, names, threshold=0.1)
    times = []
    for _ in range(12):
        start = time.perf_counter()
        d.detect(images, names, threshold=0.1)
        times.append(time.perf_counter() - start)
print(statistics.median(times))
"""


def side(runtime: str, precision: str, batch: int) -> float:
    out = subprocess.run([sys.executable, "-c", SIDE, runtime, precision, str(batch)], check=True,
                         capture_output=True, text=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, nargs="+", default=[8, 1])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--runtime", default="auto")
    parser.add_argument("--precision", default="int8")
    args = parser.parse_args()
    for batch in args.batch:
        pairs = [(side("torch", "fp32", batch), side(args.runtime, args.precision, batch)) for _ in range(args.rounds)]
        ratios = [a / b for a, b in pairs]
        print(f"batch {batch}: torch fp32 {statistics.median(a for a, _ in pairs) * 1000:.1f} ms, "
              f"{args.runtime} {args.precision} {statistics.median(b for _, b in pairs) * 1000:.1f} ms per call; "
              f"ratio {statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f}), {args.rounds} pairs "
              f"{[round(r, 2) for r in ratios]}")


if __name__ == "__main__":
    main()
