"""`ovdet benchmark`: ovdet vs transformers' OwlViT on the same ViT, side by side, in one run."""

from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path

from ovdet.cli import options

QUICK = dict(models="tiny", batch="1,2", queries="3", runs=2, image_size=64, slow_call_s=30.0)


def add_parser(sub) -> None:
    p = sub.add_parser(
        "benchmark",
        help="time ovdet against transformers' OwlViT (images/s, peak RSS, GEMM fraction); writes JSON",
        description="Times ovdet and transformers' OwlViTForObjectDetection built from the same ViT config "
        "(random weights: nothing is downloaded), each configuration in its own process; median of --runs "
        "calls after warm-up. OwlViT is timed as its API is used (processor(text, images) then model(**inputs), "
        "text re-encoded every call); ovdet with its text cache cleared every call (cold) and warm (cached). "
        "Also measures this machine's fp32/bf16 GEMM rate and the backbone's achieved fraction of it.",
        formatter_class=options.Formatter,
    )
    p.add_argument("--quick", action="store_true",
                   help="tiny settings for a smoke test: " + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in QUICK.items()))
    p.add_argument("--models", default="b32,b16,embedded", help="comma list of b32, b16, owlv2 (B/16 at 960 px, against Owlv2ForObjectDetection on identical weights), "
                        "embedded (the shipped model as saved: one-pass region scoring), embedded-crops (it with CLIP crop "
                        "re-scoring instead, the previous shipped path), embedded-dense (its head's own scores), tiny")
    p.add_argument("--batch", default="1,8", help="comma list of batch sizes")
    p.add_argument("--queries", default="5,80,1203", help="comma list of query counts (synthetic LVIS-like names)")
    p.add_argument("--precision", default="auto,fp32",
                   help="ovdet vision precisions to measure (auto resolves per model; duplicates dropped)")
    p.add_argument("--runs", type=int, default=5, help="timed calls per configuration (median reported)")
    p.add_argument("--warmup", type=int, default=1, help="untimed calls first")
    p.add_argument("--slow-call-s", type=float, default=8.0,
                   help="a configuration whose first call takes longer is timed with --slow-runs calls")
    p.add_argument("--slow-runs", type=int, default=3, help="timed calls of a slow configuration")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]: where both ovdet and transformers run")
    p.add_argument("--image-size", type=int, default=768, help="input side of the ViT models")
    p.add_argument("--large-batch-models", default="b32,embedded,tiny",
                   help="models also measured at the batch sizes above 1")
    p.add_argument("--onnx", default="", metavar="MODELS",
                   help="also export these models to ONNX (embeddings input) and time onnxruntime")
    p.add_argument("--compile", action="store_true", help="torch.compile ovdet's backbone (compile time not timed)")
    p.add_argument("--paired", type=int, default=None, metavar="ROUNDS",
                   help="also time ovdet and transformers in one process, called in turn for ROUNDS rounds (per model "
                        "and batch, first query count): the VM's speed swings hit both alike; the summary gives the "
                        "median per-round speedup (off when not given)")
    p.add_argument("--runtime", default="torch", metavar="NAMES",
                   help="comma list of what runs ovdet's network in the paired mode: torch, onnxruntime, openvino, auto "
                        "(each at every --precision that runtime has)")
    p.add_argument("--peers", default="", metavar="NAMES",
                   help="comma list of transformers' OWL graph run whole by other runtimes, in the paired mode: "
                        "openvino (fp32, converted as OpenVINO's OWL-ViT notebook does), openvino-int8 (NNCF), "
                        "onnxruntime (torch.onnx export); outputs checked against transformers in the same run")
    p.add_argument("--out", type=Path, default=Path("benchmark.json"), help="JSON results file")
    p.add_argument("--markdown", type=Path, default=None, metavar="MD",
                   help="write the generated section (command, summary, table) into this Markdown file")
    p.add_argument("--section", default="", metavar="NAME",
                   help="name of the generated Markdown section, so several runs (e.g. 'compile') keep their own")
    p.add_argument("--from-json", type=Path, default=None, metavar="JSON",
                   help="measure nothing: render the table (and --markdown) from an earlier --out file")
    options.add_overwrite(p)
    p.set_defaults(run=run)


def check_args(args: argparse.Namespace) -> None:
    """Every numeric option and the output file, in one line each, before anything is built or measured
    (an explicit value is checked even when --quick replaces it)."""
    import math

    from ovdet.errors import OvdetError
    from ovdet.safe_write import check_output_path

    for option, value, minimum in (("--runs", args.runs, 1), ("--slow-runs", args.slow_runs, 1),
                                   ("--warmup", args.warmup, 0), ("--image-size", args.image_size, 32),
                                   ("--threads", args.threads, 1), ("--paired", args.paired, 0)):
        if value is not None and value < minimum:
            raise OvdetError(f"{option} must be >= {minimum}, got {value}")
    if not (math.isfinite(args.slow_call_s) and args.slow_call_s > 0):
        raise OvdetError(f"--slow-call-s must be a number of seconds > 0, got {args.slow_call_s:g}")
    for option in ("batch", "queries"):
        for item in str(getattr(args, option)).split(","):
            if item.strip() and not (item.strip().isdigit() and int(item) >= 1):
                raise OvdetError(f"--{option} takes a comma list of whole numbers >= 1, got {item.strip()!r}")
    if args.from_json is None:
        check_output_path(args.out, "--out", overwrite=args.overwrite)


def settings_from_args(args: argparse.Namespace):
    from ovdet.benchmark.runner import BenchmarkSettings

    values = {k: getattr(args, k) for k in ("models", "batch", "queries", "runs", "image_size", "slow_call_s")}
    if args.quick:
        values.update(QUICK)
    ints = lambda text: [int(x) for x in str(text).split(",") if x.strip()]  # noqa: E731
    names = lambda text: [x.strip() for x in str(text).split(",") if x.strip()]  # noqa: E731
    settings = BenchmarkSettings(
        models=names(values["models"]), batches=ints(values["batch"]), queries=ints(values["queries"]),
        precisions=names(args.precision), runs=values["runs"], warmup=args.warmup, slow_call_s=values["slow_call_s"],
        slow_runs=args.slow_runs, threads=args.threads, image_size=values["image_size"], device=args.device,
        large_batch_models=names(args.large_batch_models), onnx_models=names(args.onnx), compile=args.compile,
        paired_rounds=args.paired or 0, runtimes=names(args.runtime) or ["torch"], peers=names(args.peers),
    )  # fmt: skip
    _check(settings)
    return settings


def _check(settings) -> None:
    from ovdet.benchmark.models import EMBEDDED_VARIANTS, OWLV2, VISION_SPECS
    from ovdet.models.precision import PRECISIONS

    bad = [m for m in settings.models + settings.onnx_models if m not in VISION_SPECS and m not in (*EMBEDDED_VARIANTS, OWLV2)]
    if bad:
        raise ValueError(f"unknown models {bad}; use {sorted(VISION_SPECS) + [*EMBEDDED_VARIANTS, OWLV2]}")
    if not settings.batches or min(settings.batches) < 1 or not settings.queries or min(settings.queries) < 1:
        raise ValueError(f"batch sizes and query counts must be >= 1, got {settings.batches} and {settings.queries}")
    if any(p not in PRECISIONS for p in settings.precisions):
        raise ValueError(f"--precision takes a comma list of {PRECISIONS}, got {settings.precisions}")
    if settings.runs < 1 or settings.slow_runs < 1:
        raise ValueError(f"--runs and --slow-runs must be >= 1, got {settings.runs} and {settings.slow_runs}")
    from ovdet.benchmark.peers import PEERS
    from ovdet.runtime.runtime_names import RUNTIMES

    if any(r not in RUNTIMES for r in settings.runtimes):
        raise ValueError(f"--runtime takes a comma list of {RUNTIMES}, got {settings.runtimes}")
    if any(p not in PEERS for p in settings.peers):
        raise ValueError(f"--peers takes a comma list of {PEERS}, got {settings.peers}")
    if settings.paired_rounds < 0:
        raise ValueError(f"--paired takes a number of rounds >= 0 (0: off), got {settings.paired_rounds}")


def run(args: argparse.Namespace) -> int:
    from ovdet.benchmark.report import markdown, print_table, write_markdown

    from ovdet.inference.results_file import write_object

    check_args(args)
    if args.from_json is not None:
        doc = json.loads(args.from_json.read_text())
    else:
        doc = _measure(args)
        write_object(doc, args.out, indent=1)
        print(f"wrote {args.out}")
    print_table(doc)
    if args.markdown is not None:
        write_markdown(args.markdown, markdown(doc, doc.get("command", "ovdet benchmark"), args.section), args.section)
        print(f"wrote {args.markdown}")
    return 0


def _measure(args: argparse.Namespace) -> dict:
    from ovdet.benchmark.runner import run_benchmark

    doc = run_benchmark(settings_from_args(args))
    doc["command"] = command_line(args)
    return doc


def command_line(args: argparse.Namespace) -> str:
    """The `ovdet benchmark` command that reproduces this run, every option spelled out."""
    parts = ["ovdet benchmark"] + (["--quick"] if args.quick else [])
    for name in ("models", "batch", "queries", "precision", "runs", "warmup", "slow_call_s", "slow_runs", "threads",
                 "device",
                 "image_size", "large_batch_models", "onnx", "paired", "runtime", "peers", "out", "markdown",
                 "section"):  # fmt: skip
        value = getattr(args, name)
        if value not in (None, "") and not (args.quick and name in QUICK):
            parts.append(f"--{name.replace('_', '-')} {shlex.quote(str(value))}")
    return " ".join(parts + (["--compile"] if args.compile else []))
