"""`ovdet train` (Hydra overrides, see conf/train.yaml) and `ovdet export-ckpt` (checkpoint -> model folder)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

TRAIN_EPILOG = """Hydra overrides, not --options:
  ovdet train experiment=smoke
  ovdet train experiment=shapeworld_ovd trainer.max_epochs=5
  ovdet train experiment=ovcoco_clip_b16 trainer=ddp trainer.devices=4
  ovdet train experiment=ovcoco_clip_b32 ckpt_path=PATH/last.ckpt     # resume
  ovdet train experiment=smoke --cfg job                               # print the config
Groups: model, data, module, trainer (cpu, gpu, ddp), callbacks, logger, experiment, debug.
The config folder is the repository's conf/ (or $OVDET_CONF). `ovdet train --help` lists the options."""


def add_parser(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train a detection head with Lightning + Hydra: "
        "ovdet train experiment=shapeworld_ovd trainer.max_epochs=5",
        description="Train an open-vocabulary detection head; writes outputs/NAME/TIME/ with checkpoints/ "
        "and detector/ (the trained model folder).",
        epilog=TRAIN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="Hydra overrides")
    p.set_defaults(run=run)

    e = sub.add_parser(
        "export-ckpt",
        help="write a detector model folder from a training checkpoint",
        description="Rebuild the detector stored in a Lightning checkpoint of `ovdet train` and save it as a "
        "model folder that `ovdet detect --model OUT` and Detector.from_pretrained load.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    e.add_argument("checkpoint", type=Path, metavar="CKPT", help="a .ckpt written by ovdet train")
    e.add_argument("out", type=Path, metavar="OUT", help="model folder to write (replaced if it exists)")
    e.add_argument("--no-copy-clip", action="store_true",
                   help="reference the CLIP by its id/path instead of copying it (frozen towers only)")
    e.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default=None,
                   help="store the head weights in this dtype")
    e.set_defaults(run=run_export)


def run(args: argparse.Namespace) -> int:
    return run_hydra(list(args.overrides))


def run_export(args: argparse.Namespace) -> int:
    from ovdet.training.export import DTYPES, export_from_checkpoint

    dtype = DTYPES[args.dtype] if args.dtype else None
    out = export_from_checkpoint(args.checkpoint, args.out, copy_clip=not args.no_copy_clip, dtype=dtype)
    print(f"wrote detector to {out}")
    return 0


def config_dir() -> Path:
    """The Hydra config folder: $OVDET_CONF if set, else the repository's conf/ next to the package."""
    env = os.environ.get("OVDET_CONF")
    folder = Path(env) if env else Path(__file__).resolve().parents[2] / "conf"
    if not (folder / "train.yaml").is_file():
        where = "$OVDET_CONF" if env else "the repository"
        raise ValueError(f"no train.yaml in {where}'s config folder '{folder}'; set OVDET_CONF to ovdet's conf/ folder")
    return folder.resolve()


def run_hydra(argv: list[str]) -> int:
    """Run `ovdet train` with Hydra overrides; returns the exit status."""
    import hydra
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import DictConfig

    from ovdet.errors import NonFiniteLossError, OvdetError
    from ovdet.training.run import train

    try:
        conf = config_dir()
    except ValueError as err:
        print(f"ovdet train: error: {err}", file=sys.stderr)
        return 2

    saved = sys.argv

    def task(cfg: DictConfig) -> None:
        # Lightning's DDP launcher starts the other ranks by re-running sys.argv: make that `ovdet train ...`.
        sys.argv = [saved[0], "train", *argv]
        try:
            train(cfg)
        except (OvdetError, NonFiniteLossError, ValueError, FileNotFoundError) as err:
            # One line naming the problem (a bad path, a NaN loss at step N), not Hydra's traceback.
            print(f"ovdet train: error: {err}", file=sys.stderr)
            raise SystemExit(2) from None

    sys.argv = [saved[0], *argv]  # hydra.main reads its overrides from sys.argv
    try:
        hydra.main(config_path=str(conf), config_name="train", version_base="1.3")(task)()
    except SystemExit as done:  # Hydra exits on --help, --cfg and errors
        return done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    finally:
        sys.argv = saved
        GlobalHydra.instance().clear()  # a later run in this process (tests, notebooks) starts afresh
    return 0
