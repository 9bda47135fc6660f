"""One-pass region scoring against crop re-scoring and the head alone, paired in one process (issue N's speed
target): the shipped model loaded three times, each scored one way (`ovdet benchmark`'s embedded variants), and
`Detector.detect` (pre- and post-processing included, text cached) called in turn for 11 rounds after a warm-up.

    python docs/results/one_pass/speed_paired.py --batch 1,8 --precision fp32,bf16 --out docs/results/one_pass/speed_paired_amx.json

Since the region classifier (docs/RESULTS.md §5g), `embedded` includes it and a fourth side,
`embedded-without-classifier`, is the same model with `classifier_weight` 0 (the one pass as it shipped before).
"""

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from ovdet.assets import DEFAULT_MODEL
from ovdet.benchmark.models import embedded_scoring
from ovdet.benchmark.workload import synthetic_images, synthetic_names
from ovdet.models.detector import Detector

SIDES = ("embedded", "embedded-crops", "embedded-dense", "embedded-without-classifier")


def measure(batch: int, precision: str, rounds: int) -> dict:
    images, names = synthetic_images(batch), synthetic_names(16)
    detectors = {}
    for side in SIDES:
        detector = Detector.from_pretrained(DEFAULT_MODEL)
        if side == "embedded-without-classifier":
            detector.set_region_scoring({**detector.region_scoring, "classifier_weight": 0.0})
        else:
            embedded_scoring(detector, side)
        detector.set_precision(precision)
        detectors[side] = detector
    seconds = {side: [] for side in SIDES}
    with torch.inference_mode():
        for detector in detectors.values():
            detector.detect(images, names, threshold=0.1)
        for _ in range(rounds):
            for side, detector in detectors.items():
                start = time.perf_counter()
                detector.detect(images, names, threshold=0.1)
                seconds[side].append(time.perf_counter() - start)
    ratios = [c / o for c, o in zip(seconds["embedded-crops"], seconds["embedded"])]
    return {"batch": batch, "precision": precision, "ms_per_image": {s: 1e3 * statistics.median(v) / batch for s, v in seconds.items()},
            "one_pass_over_crops": {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)},
            "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", default="1,8")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    runs = [measure(int(b), p, args.rounds) for p in args.precision.split(",") for b in args.batch.split(",")]
    for run in runs:
        ms, ratio = run["ms_per_image"], run["one_pass_over_crops"]
        print(f"{run['precision']} batch {run['batch']}: " + ", ".join(f"{s} {v:.1f} ms" for s, v in ms.items())
              + f"; one pass / crops {ratio['median']:.2f}x ({ratio['min']:.2f}-{ratio['max']:.2f})")
    Path(args.out).write_text(json.dumps({"cpu": cpu, "threads": torch.get_num_threads(), "torch": torch.__version__,
                                          "runs": runs}, indent=1))


if __name__ == "__main__":
    main()
