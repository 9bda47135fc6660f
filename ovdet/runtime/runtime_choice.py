"""`--runtime auto`: the fastest installed runtime for this model, precision and CPU, measured once and cached.

The rule is a measurement, not a guess: on the first use each candidate scores the same batch of two
calibration scenes with eight queries (after one warm-up call that builds and caches its graph), the median of
five calls decides, and the choice is kept in `runtime_choice.json` in ovdet's cache, keyed by the CPU (model name
and flags), the packages' versions, the model's weights and the precision. Later runs read it back.
"""

from __future__ import annotations

import hashlib
import json
import statistics
import sys
import time

from ovdet import file_mark
from ovdet.runtime.graph_cache import cache_root, detector_fingerprint
from ovdet.runtime.runtime_names import installed

CHOICE_FILE = "runtime_choice.json"
CALLS = 5


def candidates(detector, requested: str) -> list[str]:
    """torch, and each installed runtime that runs this device and precision."""
    from ovdet.runtime.runtime_setting import runtime_precision

    found = ["torch"]
    for name in ("onnxruntime", "openvino"):
        if not installed(name) or (name == "openvino" and detector.device.type != "cpu"):
            continue
        try:
            runtime_precision(detector, name, requested)
        except ValueError:
            continue
        found.append(name)
    return found


def choose_runtime(detector, requested: str, calibration: list | None = None) -> str:
    """The measured fastest of `candidates` (read from the cache when this machine measured it before)."""
    names = candidates(detector, requested)
    if len(names) == 1:
        return names[0]
    key = _key(detector, requested, names)
    path = cache_root() / CHOICE_FILE
    choices = _read(path)
    if key in choices:
        return choices[key]["runtime"]
    seconds = {name: _measure(detector, name, requested, calibration) for name in names}
    best = min(seconds, key=seconds.get)
    timing = ", ".join(f"{n} {s:.3f} s" for n, s in seconds.items())
    print(f"ovdet: runtime auto chose {best} ({timing} per batch of 2, {requested}; measured once, cached in {path})",
          file=sys.stderr)
    choices[key] = {"runtime": best, "seconds": seconds, "precision": requested, "cpu": _cpu_name()}
    _write(path, choices)
    return best


def _measure(detector, name: str, requested: str, calibration) -> float:
    import torch

    from ovdet.models.scoring import QueryBank, score
    from ovdet.runtime.engine import CALIBRATION_NAMES
    from ovdet.runtime.runtime_setting import set_runtime
    from ovdet.towers.resnet_int8 import default_calibration_images

    set_runtime(detector, name, requested, calibration)
    pixels = detector.preprocessor.to_model(default_calibration_images(2)).to(detector.device)
    with torch.inference_mode():
        bank = QueryBank(detector.encode_queries(list(CALIBRATION_NAMES)))
        score(detector, pixels, bank)  # builds (or loads) the graph
        times = []
        for _ in range(CALLS):
            start = time.perf_counter()
            score(detector, pixels, bank)
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def _key(detector, requested: str, names: list[str]) -> str:
    from importlib.metadata import PackageNotFoundError, version

    from ovdet.models.precision import cpu_flags

    versions = {}
    for package in ("torch", *names[1:]):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = ""
    parts = {"cpu": _cpu_name(), "flags": sorted(cpu_flags()), "versions": versions, "device": str(detector.device),
             "model": detector_fingerprint(detector), "precision": requested, "candidates": names}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]


def _cpu_name() -> str:
    import platform
    from pathlib import Path

    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _read(path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in data.items() if isinstance(v, dict) and "runtime" in v}


def _write(path, choices: dict) -> None:
    from ovdet.safe_write import atomic_write_bytes

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, json.dumps(file_mark.marked(choices), indent=1).encode())
