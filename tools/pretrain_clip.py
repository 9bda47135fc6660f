"""Pretrain ShapeWorld's CLIP from scratch: compose conf/pretrain_clip.yaml, fit, save the CLIP folder.

    python tools/pretrain_clip.py experiment=shapeworld_clip
    python tools/pretrain_clip.py clip=tiny_rn trainer.max_steps=50 out_dir=/tmp/clip
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from ovdet.pretraining.run import pretrain


@hydra.main(config_path="../conf", config_name="pretrain_clip", version_base="1.3")
def main(cfg: DictConfig) -> None:
    pretrain(cfg)


if __name__ == "__main__":
    main()
