"""`ovdet train` (Hydra overrides, see conf/train.yaml) and `ovdet export-ckpt` (checkpoint -> model folder)."""

from __future__ import annotations

import argparse
import os
import sys
from contextlib import contextmanager
from pathlib import Path

from ovdet.cli import options
from ovdet.errors import OvdetError

TRAIN_EPILOG = """Hydra overrides, not --options:
  ovdet train experiment=smoke                                         # nothing to prepare
  ovdet train experiment=shapeworld_ovd trainer.max_epochs=5
  ovdet train experiment=ovcoco_clip_b16 trainer=ddp trainer.devices=4
  ovdet train experiment=smoke hydra.run.dir=runs/a ckpt_path=last     # start, or resume
  ovdet train experiment=ovcoco_clip_b32 ckpt_path=PATH/last.ckpt     # resume from a file
  ovdet train experiment=smoke --cfg job                               # print the config
Groups: model, data, module, trainer (cpu, gpu, ddp), callbacks, logger, experiment, debug.
The config folder is the repository's conf/ (or $OVDET_CONF). `ovdet train --help` lists the options."""
ONE_LINE_ENV = "_OVDET_TRAIN_ONE_LINE_ERRORS"  # set by run_hydra for itself and the DDP ranks it starts


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
        formatter_class=options.Formatter,
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
    """Run `ovdet train` with Hydra overrides; returns the exit status.

    Every failure is one line, `ovdet train: error: ...`, exit status 2 (HYDRA_FULL_ERROR=1 shows
    the traceback instead); SIGTERM is one line and 143. A fixed `hydra.run.dir` is locked before
    Hydra writes into it, so a second run into a busy folder changes nothing there.
    """
    import hydra
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import DictConfig

    from ovdet.training.config_paths import register_resolvers
    from ovdet.training.preflight import check_run
    from ovdet.training.run import train
    from ovdet.training.run_lock import RunLock
    from ovdet.training.sigterm import TrainingStopped

    try:
        conf = config_dir()
    except ValueError as err:
        print(f"ovdet train: error: {err}", file=sys.stderr)
        return 2
    register_resolvers()
    failures: list[Exception] = []

    def task(cfg: DictConfig) -> None:
        # Lightning's DDP launcher starts the other ranks by re-running sys.argv: make that `ovdet train ...`.
        sys.argv = [saved_argv[0], "train", *argv]
        try:
            train(cfg)
        except Exception as err:  # raised below, past Hydra, which would print its own line first
            failures.append(err)

    try:
        check_not_pretraining(conf, argv)
    except OvdetError as err:
        print(f"ovdet train: error: {err}", file=sys.stderr)
        return 2
    saved_argv = sys.argv
    sys.argv = [saved_argv[0], *argv]  # hydra.main reads its overrides from sys.argv
    planned = planned_config(conf, argv)
    run_dir = planned_run_dir(planned, argv)
    try:
        with hydra_raises() as traceback_wanted:
            if planned is not None:  # option values first: nothing, not even the run folder, is made
                check_run(planned, None)
        with hydra_raises() as traceback_wanted, RunLock(run_dir):
            if planned is not None:  # every refusal before Hydra writes .hydra/ into the run folder
                check_run(planned, run_dir)
            hydra.main(config_path=str(conf), config_name="train", version_base="1.3")(task)()
            if failures:
                raise failures[0]
    except SystemExit as done:  # Hydra exits on --help and --cfg; Lightning after Ctrl+C
        return done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    except TrainingStopped as stop:
        print(f"ovdet train: {stop}", file=sys.stderr)
        return stop.exit_code
    except KeyboardInterrupt:
        print("ovdet train: interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        if traceback_wanted:
            raise
        print(f"ovdet train: error: {error_line(err)}", file=sys.stderr)
        return 2
    finally:
        sys.argv = saved_argv
        GlobalHydra.instance().clear()  # a later run in this process (tests, notebooks) starts afresh
    return 0


@contextmanager
def hydra_raises():
    """Make Hydra raise errors instead of printing its own multi-line report; yields whether the user
    asked for tracebacks (HYDRA_FULL_ERROR=1 set by them, not by this function in a parent process)."""
    wanted = os.environ.get("HYDRA_FULL_ERROR") == "1" and os.environ.get(ONE_LINE_ENV) != "1"
    saved = {key: os.environ.get(key) for key in ("HYDRA_FULL_ERROR", ONE_LINE_ENV)}
    os.environ["HYDRA_FULL_ERROR"] = "1"
    os.environ[ONE_LINE_ENV] = "0" if wanted else "1"  # DDP ranks started from here inherit the choice
    try:
        yield wanted
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def pretraining_experiments(conf: Path) -> list[str]:
    """Experiments in conf/experiment/ that configure CLIP pretraining (`tools/pretrain_clip.py`): they
    override the `clip` group, which only `pretrain_clip.yaml` has."""
    return sorted(f.stem for f in (conf / "experiment").glob("*.yaml") if "override /clip" in f.read_text())


def check_not_pretraining(conf: Path, argv: list[str]) -> None:
    """`experiment=shapeworld_clip` is a pretraining experiment: one line naming the command that runs it
    (Hydra would only say "Could not override 'clip'")."""
    for arg in argv:
        name = arg.split("=", 1)[1] if arg.startswith(("experiment=", "+experiment=")) else None
        if name in pretraining_experiments(conf):
            raise OvdetError(
                f"experiment={name} pretrains a CLIP and is not an ovdet train experiment: run "
                f"`python tools/pretrain_clip.py experiment={name}`, then train a head on it with "
                f"`ovdet train experiment=shapeworld_ovd model.clip=DIR`"
            )


def planned_config(conf: Path, argv: list[str]):
    """The config `hydra.main` will compose from `argv` (with its `hydra` node), for the checks that must
    come before Hydra writes into the run folder; None for --help, --cfg, -m, DDP ranks > 0 and bad
    overrides (hydra.main reports those itself)."""
    from hydra import compose, initialize_config_dir

    from ovdet.training.run_lock import is_main_process

    if not is_main_process() or any(a.startswith("-") for a in argv):
        return None
    try:
        with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
            return compose("train", overrides=argv, return_hydra_config=True)
    except Exception:  # a bad override: hydra.main reports it
        return None


def planned_run_dir(cfg, argv: list[str]) -> Path | None:
    """The run folder an explicit `hydra.run.dir=...` names (interpolations resolved), else None; it is
    also set as `paths.output_dir` of `cfg`, so the paths under it resolve.

    Timestamped folders are left to `train()`'s own lock and checks: composing here could resolve `${now:}`
    a second apart from the run itself.
    """
    from omegaconf import OmegaConf

    if cfg is None or not any(a.startswith("hydra.run.dir=") for a in argv):
        return None
    try:
        run_dir = Path(str(OmegaConf.select(cfg, "hydra.run.dir"))).absolute()
    except Exception:  # an interpolation that does not resolve: hydra.main reports it
        return None
    OmegaConf.update(cfg, "paths.output_dir", str(run_dir))
    return run_dir


def error_line(err: BaseException) -> str:
    """One line for any exception: a user error's own message, else `Type: message`.

    Hydra wraps errors raised while building an object; a user error inside is shown on its own.
    """
    from hydra.errors import HydraException, InstantiationException
    from omegaconf.errors import OmegaConfBaseException

    from ovdet.errors import NonFiniteLossError

    user = (ValueError, FileNotFoundError, NonFiniteLossError, HydraException, OmegaConfBaseException)
    if isinstance(err, InstantiationException) and isinstance(err.__cause__, user):
        err = err.__cause__
    text = " ".join(str(err).split()).split(" Config search path:")[0] or type(err).__name__  # Hydra's tail
    return text if isinstance(err, user) else f"{type(err).__name__}: {text}"
