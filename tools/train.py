"""Train a detection head: compose conf/train.yaml, instantiate, fit. Same as `ovdet train`.

    python tools/train.py experiment=shapeworld_ovd trainer.max_epochs=5
    python tools/train.py experiment=ovcoco_clip_b16 trainer=ddp trainer.devices=4
    python tools/train.py experiment=ovcoco_clip_b32 ckpt_path=PATH/last.ckpt   # resume
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from ovdet.training.run import train


@hydra.main(config_path="../conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> None:
    train(cfg)


if __name__ == "__main__":
    main()
