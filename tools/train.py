"""Train a detection head: compose conf/train.yaml, instantiate, fit. The same as `ovdet train` (it calls it).

    python tools/train.py experiment=shapeworld_ovd trainer.max_epochs=5
    python tools/train.py experiment=ovcoco_clip_b16 trainer=ddp trainer.devices=4
    python tools/train.py experiment=ovcoco_clip_b32 ckpt_path=PATH/last.ckpt   # resume
"""

from __future__ import annotations

import sys

from ovdet.cli.train import run_hydra

if __name__ == "__main__":
    sys.exit(run_hydra(sys.argv[1:]))
