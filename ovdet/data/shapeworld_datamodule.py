"""A COCO data module over ShapeWorld sets that generates a missing set on first use."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from ovdet.data.datamodule import CocoDataModule

STAGES = ("train", "val")
IMAGES_PER_SECOND = 50  # one CPU core; for the time estimate only


class ShapeWorldDataModule(CocoDataModule):
    """`CocoDataModule` whose train/val sets are made, when missing, as `ovdet shapeworld` makes them.

    Args:
        generate: per stage ("train", "val"), the set to write when its json does not exist:
            {"num_images": N, "seed": S, "annotate": "base" | "all"}; a stage left out (or
            `generate: null`) is never generated. The json's folder gets the set, so the stage's
            images path must be that folder's `images/`.
        The other arguments are `CocoDataModule`'s.
    """

    def __init__(self, *args, generate: dict | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.generate = dict(generate or {})
        unknown = set(self.generate) - set(STAGES)
        if unknown:
            raise ValueError(f"data.generate has unknown stage(s) {sorted(unknown)}; use {list(STAGES)}")

    def prepare_data(self) -> None:
        """Write each missing set (Lightning calls this once per node, before `setup`)."""
        paths = {"train": (self.train_json, self.train_images), "val": (self.val_json, self.val_images)}
        for stage in STAGES:
            json_path, images = paths[stage]
            spec = self.generate.get(stage)
            if spec is not None and json_path is not None and not Path(json_path).is_file():
                generate_set(stage, Path(json_path), Path(images), **spec)


def generate_set(stage: str, json_path: Path, images: Path, num_images: int, seed: int, annotate: str = "all") -> None:
    """Write a ShapeWorld set into `json_path`'s folder, saying so in one line (with the equivalent command)."""
    from ovdet.data.shapeworld_dataset import write_dataset

    out = json_path.parent
    if json_path.name != "instances.json" or images != out / "images":
        raise ValueError(
            f"data.{stage}_json '{json_path}' does not exist and cannot be generated here: a ShapeWorld set is "
            f"OUT/instances.json with OUT/images/, but data.{stage}_images is '{images}'; make it with "
            f"`ovdet shapeworld --out DIR ...` and point both paths at it"
        )
    command = f"ovdet shapeworld --out {out} --num-images {num_images} --seed {seed} --annotate {annotate}"
    workers = 0 if num_images < 1000 else min(4, os.cpu_count() or 1)
    minutes = num_images / IMAGES_PER_SECOND / max(workers, 1) / 60
    estimate = f", about {minutes:.0f} min" if minutes >= 1 else ""
    print(f"ovdet train: no {stage} set at '{json_path}'; generating it ({num_images} images{estimate}), as `{command}` "
          "would", flush=True)
    # A set cut short (killed while rendering) has images but no instances.json: its files are ovdet's own.
    write_dataset(out, num_images, seed, annotate=annotate, workers=workers, progress=sys.stdout.isatty(),
                  overwrite=True)
