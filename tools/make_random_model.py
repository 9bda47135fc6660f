"""Write an UNTRAINED detector on a tiny random CLIP: plumbing for `make detect` and smoke tests.

Its boxes mean nothing; `ovdet detect` labels its output as untrained. Usage:
    python tools/make_random_model.py OUT_DIR [--image-size 224] [--seed 0]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from transformers import CLIPConfig, CLIPModel

from ovdet.models.detector import Detector


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="folder to write the detector into")
    parser.add_argument("--image-size", type=int, default=224, help="detector input side (multiple of 16)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    config = CLIPConfig(
        text_config=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2),
        vision_config=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                           image_size=64, patch_size=16),
        projection_dim=64,
    )
    with tempfile.TemporaryDirectory() as tmp:
        CLIPModel(config).save_pretrained(tmp)
        detector = Detector.from_clip(tmp, image_size=args.image_size)
        detector.save_pretrained(args.out)
    print(f"wrote untrained plumbing detector to {args.out}")


if __name__ == "__main__":
    main()
