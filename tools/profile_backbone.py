"""Per-op profile of ovdet's predict on a random-weight ViT (torch.profiler), saved as a table under docs/results/.

    python tools/profile_backbone.py --model b32 --batch 1 --precision bf16 --out docs/results/profile_b32_bf16_b1.txt

Nothing is downloaded: the ViT is built from its config with random weights (speed does not depend on them).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="b32", help="b32, b16 or tiny (random-weight CLIP ViTs), or owlv2 (B/16 at 960 px)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--queries", type=int, default=5)
    p.add_argument("--image-size", type=int, default=768)
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "int8"])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rows", type=int, default=25, help="ops shown, by self CPU time")
    p.add_argument("--out", type=Path, default=None, help="write the table here")
    args = p.parse_args(argv)

    import torch
    from torch.profiler import ProfilerActivity, profile

    from ovdet.benchmark.models import OWLV2, OWLV2_SIZE, save_random_models, save_random_owlv2
    from ovdet.benchmark.workload import synthetic_images, synthetic_names
    from ovdet.models.detector import Detector

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        if args.model == OWLV2:  # its own size, as the benchmark runs it
            args.image_size = OWLV2_SIZE
            det = Detector.from_pretrained(save_random_owlv2(tmp)["owl_dir"]).eval()
        else:
            dirs = save_random_models(args.model, args.image_size, tmp)
            det = Detector.from_clip(dirs["clip_dir"], image_size=args.image_size).eval()
    det.set_precision(args.precision)
    images, names = synthetic_images(args.batch), synthetic_names(args.queries)
    for _ in range(2):  # warm-up: caches, oneDNN primitives
        det.predict(det.preprocessor.to_model(images), names)
    with profile(activities=[ProfilerActivity.CPU], record_shapes=False) as prof:
        det.predict(det.preprocessor.to_model(images), names)
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows)
    header = (f"# predict, {args.model} at {args.image_size} px, batch {args.batch}, {args.queries} queries, "
              f"{args.precision}, {args.threads} threads, torch {torch.__version__}, "
              f"CPU capability {torch.backends.cpu.get_cpu_capability()}\n")
    print(header + table)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(header + table)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
