"""Plan the benchmark's configurations, measure each in a child process, and collect one JSON document."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ovdet.benchmark.gemm import gemm_rate
from ovdet.benchmark.models import EMBEDDED_VARIANTS, OWLV2, OWLV2_SIZE, embedded_scoring, save_random_models, save_random_owlv2
from ovdet.models.precision import bf16_supported, cpu_flags, resolve_precision


@dataclass
class BenchmarkSettings:
    """What to measure. Queries are synthetic LVIS-like names; images are noise of mixed COCO sizes.

    models: b32, b16, tiny (random-weight CLIP ViTs, also built as OwlViT) and embedded (ovdet's
        shipped ResNet model, which has no OwlViT twin).
    precisions: ovdet vision-tower precisions; "auto" resolves per model on this machine and
        duplicates are dropped. The first is measured everywhere, cold and cached text; the
        others with cached text at the first query count only (text cost does not depend on them).
        The backbone alone (FLOP rate) is timed at the first query count.
    large_batch_models: models measured at batch sizes above 1 (a B/16 batch takes minutes).
    slow_call_s / slow_runs: a configuration whose first call takes longer than slow_call_s is
        measured with slow_runs calls (see `measure.timed_runs`); the JSON records every count.
    paired_rounds: above 0, each model with a transformers twin is also timed against it in one
        process, the two called in turn for this many rounds (`measure.measure_paired`), per batch
        size at the first query count. The embedded model, which has no transformers twin, is paired against
        its own torch path at fp32.
    runtimes: what runs ovdet's network (torch, onnxruntime, openvino, auto), each timed in the paired mode.
    peers: transformers' OWL graph converted whole by other runtimes (`ovdet.benchmark.peers`), paired mode.
    """

    models: list[str] = field(default_factory=lambda: ["b32", "b16", "embedded"])
    batches: list[int] = field(default_factory=lambda: [1, 8])
    queries: list[int] = field(default_factory=lambda: [5, 80, 1203])
    precisions: list[str] = field(default_factory=lambda: ["auto", "fp32"])
    runs: int = 5
    warmup: int = 1
    slow_call_s: float = 8.0
    slow_runs: int = 3
    threads: int | None = None
    image_size: int = 768
    large_batch_models: list[str] = field(default_factory=lambda: ["b32", "embedded", "tiny"])
    onnx_models: list[str] = field(default_factory=list)
    compile: bool = False
    paired_rounds: int = 0
    runtimes: list[str] = field(default_factory=lambda: ["torch"])
    peers: list[str] = field(default_factory=list)
    child_timeout_s: float = 1800.0
    device: str = "cpu"


def machine_info(threads: int) -> dict:
    """What the numbers depend on."""
    name = next((line.split(":", 1)[1].strip() for line in _cpuinfo_lines() if line.startswith("model name")), "?")
    import transformers

    return {
        "cpu": name or platform.processor(), "cpu_bf16_flags": sorted({"avx512_bf16", "amx_bf16"} & cpu_flags()),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(), "bf16_supported": bf16_supported("cpu"),
        "threads": threads, "torch": torch.__version__, "transformers": transformers.__version__,
        "python": platform.python_version(), "load_average": os.getloadavg(),
        "cpu_features": sorted(f for f in cpu_flags() if f.startswith(("avx", "amx", "fma"))),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }  # fmt: skip


def _cpuinfo_lines() -> list[str]:
    path = Path("/proc/cpuinfo")
    return path.read_text().splitlines() if path.is_file() else []


def plan(settings: BenchmarkSettings, dirs: dict[str, dict]) -> list[dict]:
    """Every configuration as a child spec (impl, model, batch, queries, precision, paths, timing)."""
    timing = {k: getattr(settings, k) for k in ("runs", "warmup", "slow_call_s", "slow_runs", "threads", "device")}
    specs = []
    for model in settings.models:
        kind = "resnet" if model in EMBEDDED_VARIANTS else "vit"
        precisions = [p for p in dict.fromkeys(_resolved(p, settings.device, kind) for p in settings.precisions) if p]
        batches = [b for b in settings.batches if b == 1 or model in settings.large_batch_models]
        for batch in batches:
            for queries in settings.queries:
                base = {"model": model, "batch": batch, "queries": queries, **timing, **dirs[model]}
                if model not in EMBEDDED_VARIANTS:
                    specs.append({**base, "impl": "owlvit", "precision": "fp32"})
                first = queries == settings.queries[0]
                for i, precision in enumerate(precisions):
                    if i == 0 or first:  # other precisions: one query count shows the dtype's effect
                        specs.append({**base, "impl": "ovdet", "precision": precision, "cold": i == 0,
                                      "backbone": first, "compile": settings.compile})  # fmt: skip
                if model in settings.onnx_models and "onnx_paths" in dirs[model]:
                    specs.append({**base, "impl": "onnxruntime", "precision": "fp32"})
                if settings.paired_rounds and queries == settings.queries[0]:
                    peers = [] if model in EMBEDDED_VARIANTS else settings.peers
                    specs.append({**base, "impl": "paired", "precision": precisions[0], "precisions": precisions,
                                  "rounds": settings.paired_rounds, "runtimes": settings.runtimes,
                                  "peers": peers})  # fmt: skip
    return specs


def _resolved(precision: str, device: str, kind: str) -> str | None:
    """The precision a model runs in, or None where it does not apply (int8 on a ResNet tower or a GPU)."""
    try:
        return resolve_precision(precision, device, kind)
    except ValueError:
        return None


def run_child(spec: dict, timeout_s: float) -> dict:
    """Measure one configuration in a fresh Python process; errors come back as {"error": ...}."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "ovdet.benchmark.measure", json.dumps(spec)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout_s:.0f} s"}
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        return {"error": (done.stderr or done.stdout).strip().splitlines()[-1:] or [f"exit {done.returncode}"]}
    return json.loads(lines[-1])


def prepare(settings: BenchmarkSettings, folder: Path, log) -> dict[str, dict]:
    """Save the random models once (and export ONNX files where asked); paths per model."""
    from ovdet.assets import DEFAULT_MODEL

    dirs: dict[str, dict] = {}
    for model in settings.models:
        if model in EMBEDDED_VARIANTS:
            dirs[model] = {"model_dir": str(DEFAULT_MODEL), "image_size": _embedded_size(DEFAULT_MODEL)}
        elif model == OWLV2:
            log("building random-weight OWLv2 B/16 ...")
            dirs[model] = {**save_random_owlv2(folder), "image_size": OWLV2_SIZE}
        else:
            log(f"building random-weight {model} CLIP and OwlViT ...")
            dirs[model] = {**save_random_models(model, settings.image_size, folder), "image_size": settings.image_size}
        if model in settings.onnx_models:
            dirs[model].update(_export_for_benchmark(model, dirs[model], folder, settings.batches, log))
    return dirs


def _embedded_size(model_dir: Path) -> int:
    return int(json.loads((Path(model_dir) / "config.json").read_text())["image_size"])


def _export_for_benchmark(model: str, paths: dict, folder: Path, batches: list[int], log) -> dict:
    """Export the embeddings-input ONNX variant (one file per batch size when crop re-scoring fixes
    the batch), check it against torch, and time the export."""
    from ovdet.benchmark.workload import synthetic_images, synthetic_names
    from ovdet.export.onnx import check_onnx, export_onnx
    from ovdet.models.detector import Detector

    log(f"exporting {model} to ONNX ...")
    if model in EMBEDDED_VARIANTS:
        det = Detector.from_pretrained(paths["model_dir"]).eval()
        embedded_scoring(det, model)
    else:
        det = Detector.from_clip(paths["clip_dir"], image_size=paths["image_size"]).eval()
    start = time.perf_counter()
    path = str(export_onnx(det, folder / f"{model}.onnx", "embeds"))  # one file, dynamic batch
    export_s = time.perf_counter() - start
    files = {str(b): path for b in batches}
    queries = det.encode_queries(synthetic_names(5))
    pixels = det.preprocessor(synthetic_images(min(batches)))
    check = check_onnx(path, det, pixels, queries, baked=False, runs=1)
    return {"onnx_paths": files, "onnx_export_s": export_s, "onnx_check": check,
            "image_mean": list(det.backbone.image_mean), "image_std": list(det.backbone.image_std),
            "embed_dim": det.text_encoder.embed_dim}  # fmt: skip


def run_benchmark(settings: BenchmarkSettings, log=lambda msg: print(msg, file=sys.stderr, flush=True)) -> dict:
    """Measure everything in `settings`; returns the JSON document (see `report.rows`)."""
    threads = settings.threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    started = time.time()
    log("measuring the GEMM rate (fp32, bf16) ...")
    gemm = {"fp32": gemm_rate(torch.float32, device=settings.device),
            "bf16": gemm_rate(torch.bfloat16, device=settings.device)}
    with tempfile.TemporaryDirectory(prefix="ovdet-bench-") as tmp:
        dirs = prepare(settings, Path(tmp), log)
        specs = plan(settings, dirs)
        configs = []
        for i, spec in enumerate(specs, 1):
            log(f"[{i}/{len(specs)}] {spec['impl']:<11} {spec['model']:<8} batch {spec['batch']:<2} "
                f"queries {spec['queries']:<5} {spec['precision']}")  # fmt: skip
            result = run_child(spec, settings.child_timeout_s)
            if "error" in result:
                log(f"    error: {result['error']}")
            configs.append({"spec": _public(spec), "result": result})
    onnx = {m: {k: d[k] for k in ("onnx_export_s", "onnx_check") if k in d} for m, d in dirs.items() if "onnx_paths" in d}
    return {
        "settings": asdict(settings), "machine": machine_info(threads), "gemm": gemm, "onnx": onnx,
        "configs": configs, "wall_s": time.time() - started,
    }  # fmt: skip


def _public(spec: dict) -> dict:
    """The spec without temporary paths (they mean nothing once the run is over)."""
    return {k: v for k, v in spec.items() if not k.endswith(("_dir", "_paths"))}
