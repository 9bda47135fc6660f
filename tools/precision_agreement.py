"""bf16 (or int8) vs fp32 on a ShapeWorld validation set: AP50 of the same model in each precision
(bounds: 0.5 points for bf16, 1.0 for int8).

    ovdet shapeworld --out /tmp/sw_val --num-images 500 --seed 1000
    python tools/precision_agreement.py --data /tmp/sw_val --out docs/results/precision_agreement.json

The model defaults to the embedded ShapeWorld model (a ResNet CLIP with crop re-scoring, which
`--precision auto` keeps in fp32 on a CPU); both precisions are forced here so the comparison is made.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    from ovdet.benchmark.agreement import precision_agreement
    from ovdet.assets import resolve_model

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="a folder of `ovdet shapeworld` (instances.json, images/)")
    p.add_argument("--model", default=None, help="ovdet model folder; default: the embedded model")
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N images")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--precisions", default="fp32,bf16",
                   help="comma list, the first is the reference: fp32,bf16 (bound 0.5 AP50) or fp32,int8 (bound 1.0)")
    p.add_argument("--out", type=Path, default=None, help="write the comparison as JSON")
    args = p.parse_args(argv)
    if not (args.data / "instances.json").is_file():
        print(f"error: no instances.json in '{args.data}'; make one with "
              f"`ovdet shapeworld --out {args.data} --num-images 500 --seed 1000`", file=sys.stderr)  # fmt: skip
        return 2
    report = precision_agreement(resolve_model(args.model), args.data / "instances.json", args.data / "images",
                                 precisions=tuple(args.precisions.split(",")), batch_size=args.batch_size,
                                 workers=args.workers, limit=args.limit)  # fmt: skip
    for precision, metrics in report["metrics"].items():
        shown = ", ".join(f"{k} {v:.2f}" for k, v in metrics.items())
        print(f"{precision:>5}: {shown}  ({report['seconds'][precision]:.0f} s, {report['images']} images)")
    verdict = "agree" if report["agree"] else "DISAGREE"
    print(f"max |AP50 gap| = {report['max_abs_AP50_gap']:.2f} points (bound {report['bound']}): {verdict}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2))
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
