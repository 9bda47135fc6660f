"""Options several commands share, written once so names, defaults and checks agree everywhere."""

from __future__ import annotations

import argparse
import re

from ovdet.errors import OvdetError

MODEL_HELP = ("ovdet model folder, OWL-ViT/OWLv2 folder, CLIP/OpenCLIP/SigLIP folder or cached hub id "
              "(a bare tower gets an untrained head); default: the embedded ShapeWorld model")
TEMPLATES_HELP = ("prompt templates: single, photo, clip7, clip80 or a .json list of strings; "
                  "default: the model's own (its config.json 'templates')")
_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?|mps)$")


class Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults in --help, but not "(default: None)" for options whose default is decided later."""

    def _get_help_string(self, action):
        if action.default is None or action.default is argparse.SUPPRESS or isinstance(action.default, bool):
            return action.help
        return super()._get_help_string(action)


def add_model(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, metavar="PATH_OR_ID", help=MODEL_HELP)


def add_runtime(p: argparse.ArgumentParser, default: str = "torch") -> None:
    from ovdet.runtime.runtime_names import RUNTIME_HELP, RUNTIMES

    p.add_argument("--runtime", choices=RUNTIMES, default=default, help=RUNTIME_HELP)


def apply_speed(detector, precision: str | None, runtime: str) -> None:
    """`--precision` then `--runtime` on a loaded detector (precision None: left as loaded)."""
    if precision is not None:
        detector.set_precision(precision)
    if runtime != "torch":
        detector.set_runtime(runtime)


def add_scoring(p: argparse.ArgumentParser) -> None:
    from ovdet.models.scoring_modes import SCORING_HELP, SCORING_MODES

    p.add_argument("--scoring", choices=SCORING_MODES, default="model", help=SCORING_HELP)


def apply_scoring(detector, scoring: str) -> None:
    """`--scoring` on a loaded detector; a tower that cannot score that way is one line (OvdetError)."""
    from ovdet.models.scoring_modes import apply_scoring as apply

    try:
        apply(detector, scoring)
    except ValueError as err:
        raise OvdetError(str(err)) from None


def add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N, mps, or auto (cuda when there is one)")


def add_templates(p: argparse.ArgumentParser) -> None:
    p.add_argument("--templates", default=None, help=TEMPLATES_HELP)
    p.add_argument("--template-mode", choices=["embed", "logit"], default="embed",
                   help="average template embeddings (CLIP) or average logits over templates (OWL-ViT)")


def add_overwrite(p: argparse.ArgumentParser) -> None:
    p.add_argument("--overwrite", action="store_true",
                   help="replace existing output files even if ovdet did not write them (without it, a file "
                        "that does not carry ovdet's mark is refused before any work starts)")


def add_postprocess(p: argparse.ArgumentParser, max_detections: int = 100) -> None:
    p.add_argument("--threshold", type=float, default=None,
                   help="minimum score (sigmoid, 0..1) to report; default: the model's own (config.json 'threshold')")
    p.add_argument("--nms", type=float, default=0.5, help="IoU threshold of NMS; 1 keeps all boxes")
    p.add_argument("--agnostic-nms", action="store_true",
                   help="NMS across queries (one box keeps one query) instead of per query")
    p.add_argument("--max-detections", "--max-dets", dest="max_detections", type=int, default=max_detections,
                   help="detections kept per image")
    p.add_argument("--quiet", "--no-progress", dest="quiet", action="store_true",
                   help="print no tables or progress, only errors and the files written")


def check_postprocess(args: argparse.Namespace) -> None:
    """Option values checked before any model is loaded."""
    check_values(threshold=args.threshold, nms=args.nms, max_detections=args.max_detections)


def check_values(threshold: float | None, nms: float | None, max_detections: int,
                 max_option: str = "--max-detections") -> None:
    """Score threshold, NMS IoU and detection cap, by the API's own rules (NaN, infinities and values out of
    range are one line naming the option)."""
    from ovdet.option_values import check_iou, check_score

    if threshold is not None:
        check_score("--threshold", threshold)
    if nms is not None:
        check_iou("--nms", nms)
    check_at_least(max_option, max_detections, 1)


def check_at_least(option: str, value: int, minimum: int) -> None:
    """An integer option (`--batch-size`, `--workers`) below its minimum is one line."""
    if value < minimum:
        raise OvdetError(f"{option} must be >= {minimum}, got {value}")


def resolve_device(name: str) -> str:
    """'auto' -> cuda when present, else cpu; a device this machine lacks is one clear error."""
    import torch

    if not _DEVICE.match(name or ""):
        raise ValueError(f"--device {name!r} is not a device ovdet runs on; use cpu, cuda, cuda:N, mps or auto")
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"--device {name}: this machine has no CUDA GPU that torch can use; use --device cpu")
        index = int(name.split(":")[1]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise ValueError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) here")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError("--device mps: this machine has no Apple GPU torch can use; use --device cpu")
    return name
