"""`ovdet` entry point: subcommands, and one clear line on stderr for user errors."""

from __future__ import annotations

import argparse
import sys

from ovdet import __version__

DESCRIPTION = """Open-vocabulary object detection on CLIP: detect anything you can name.

Examples:
  ovdet detect photo.jpg -q "red umbrella" -q "forklift" --draw out/
  ovdet shapeworld --out data/sw --num-images 1000 --seed 0
  ovdet train experiment=shapeworld_ovd
  ovdet eval --model MODEL --annotations val.json --images DIR --split ovcoco
"""


def build_parser() -> argparse.ArgumentParser:
    from ovdet.cli import detect

    parser = argparse.ArgumentParser(
        prog="ovdet", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"ovdet {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in (detect, *_optional_commands()):
        before = set(sub.choices)
        module.add_parser(sub)
        for name in set(sub.choices) - before:
            if sub.choices[name].get_default("run") is None:
                sub.choices[name].set_defaults(run=module.run)
    return parser


def _optional_commands():
    """Subcommands whose modules may pull heavy dependencies; each adds itself if present."""
    import importlib

    for name in ("shapeworld", "train", "evaluate", "export", "embed_vocab", "benchmark", "demo", "label", "index",
                 "search"):
        try:
            yield importlib.import_module(f"ovdet.cli.{name}")
        except ModuleNotFoundError as err:
            if err.name != f"ovdet.cli.{name}":
                raise


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "train":
        # Hydra parses its own overrides (key=value); hand them over untouched.
        from ovdet.cli.train import run_hydra

        return run_hydra(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 1
    try:
        return int(args.run(args) or 0)
    except (ValueError, FileNotFoundError, OSError) as err:
        print(f"ovdet {args.command}: error: {_printable(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ovdet: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # anything else is still one line (OVDET_TRACEBACK=1 shows where it came from)
        import os

        if os.environ.get("OVDET_TRACEBACK"):
            raise
        print(f"ovdet {args.command}: error: {type(err).__name__}: {_printable(err)} "
              "(set OVDET_TRACEBACK=1 for the traceback)", file=sys.stderr)
        return 2


def _printable(err: BaseException) -> str:
    """The message on one line, terminal escape sequences shown as escapes, never sent raw."""
    text = " ".join(str(err).split("\n")).strip() or type(err).__name__
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode() for ch in text)


if __name__ == "__main__":
    sys.exit(main())
