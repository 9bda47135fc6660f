"""Which fp32/bf16 Linear kernel a CPU runs faster: torch's default (MKL for fp32) or oneDNN's prepacked weights.

Neither wins everywhere: on an AVX512-BF16 AMD EPYC, MKL's fp32 path runs AVX2 code and oneDNN's prepacked
layers are 2x faster; on a 2-core Intel Xeon (AVX512-VNNI) MKL's fp32 beat them. So the choice is measured on
the CPU at hand, once per CPU, torch version, dtype and layer shape, and kept in ovdet's cache
(`kernel_choice.json`); later runs read it back. OVDET_LINEAR_KERNEL=packed|plain overrides it.
"""

from __future__ import annotations

import hashlib
import json
import os
import statistics
import time

import torch
from torch import nn

from ovdet import file_mark

CHOICE_FILE = "kernel_choice.json"
OVERRIDE_ENV = "OVDET_LINEAR_KERNEL"
_REPEATS, _CALLS = 5, 3


def packed_is_faster(module: nn.Module, tokens: int, dtype: torch.dtype = torch.float32) -> bool:
    """Whether oneDNN's prepacked Linear beats the plain one on this CPU for the largest Linear in `module`
    with `tokens` rows (measured once, then cached)."""
    forced = os.environ.get(OVERRIDE_ENV, "").strip().lower()
    if forced in ("packed", "plain"):
        return forced == "packed"
    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    if not linears:
        return False
    layer = max(linears, key=lambda m: m.weight.numel())
    shape = (tokens, layer.in_features, layer.out_features)
    key = _key(shape, dtype)
    path = _path()
    choices = _read(path)
    if key not in choices:
        choices[key] = _measure(shape, dtype)
        _write(path, choices)
    return choices[key]["packed"]


# a ViT-B MLP layer at B/32 768 px, batch 1: the shape "auto" precision asks about
BF16_PROBE = (577, 768, 3072)


def bf16_is_faster(shape: tuple[int, int, int] = BF16_PROBE) -> bool:
    """Whether bf16 Linear layers beat fp32 ones on this CPU (each with its own faster kernel), measured once and
    cached. A CPU may have AVX512-BF16 and still run bf16 GEMMs slower than fp32: a 2-core Xeon without AMX
    measured bf16 at 87 GFLOP/s and fp32 at 142, and a B/32 at 0.69x transformers in bf16 but 1.22x in fp32."""
    if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return False
    key = _key(shape, "bf16-vs-fp32")
    path = _path()
    choices = _read(path)
    if key not in choices:
        fp32, bf16 = _measure(shape, torch.float32), _measure(shape, torch.bfloat16)
        best = {name: min(m["seconds"].values()) for name, m in (("fp32", fp32), ("bf16", bf16))}
        choices[key] = {"packed": best["bf16"] < best["fp32"], "seconds": best, "shape": list(shape),
                        "question": "bf16 faster than fp32"}
        _write(path, choices)
    return choices[key]["packed"]


def _measure(shape: tuple[int, int, int], dtype: torch.dtype) -> dict:
    from ovdet.towers.cpu_linear import pack

    tokens, d_in, d_out = shape
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(tokens, d_in, generator=generator).to(dtype)
    plain = nn.Linear(d_in, d_out).to(dtype).eval().requires_grad_(False)
    packed = nn.Linear(d_in, d_out).to(dtype).eval().requires_grad_(False)
    packed.load_state_dict(plain.state_dict())
    pack(packed)
    seconds = {}
    with torch.inference_mode():
        for name, layer in (("plain", plain), ("packed", packed)):
            layer(x)
            runs = []
            for _ in range(_REPEATS):
                start = time.perf_counter()
                for _ in range(_CALLS):
                    layer(x)
                runs.append((time.perf_counter() - start) / _CALLS)
            seconds[name] = statistics.median(runs)
    return {"packed": seconds["packed"] < seconds["plain"], "seconds": seconds, "shape": list(shape), "dtype": str(dtype)}


def _key(shape, dtype) -> str:
    from ovdet.models.precision import usable_cpu_flags
    from ovdet.runtime.runtime_choice import _cpu_name

    parts = [_cpu_name(), sorted(usable_cpu_flags()), torch.__version__, torch.get_num_threads(), list(shape), str(dtype)]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:32]


def _path():
    from ovdet.runtime.graph_cache import cache_root

    return cache_root() / CHOICE_FILE


def _read(path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in data.items() if isinstance(v, dict) and isinstance(v.get("packed"), bool)}


def _write(path, choices: dict) -> None:
    from ovdet.safe_write import atomic_write_bytes

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, json.dumps(file_mark.marked(choices), indent=1).encode())
    except OSError:
        pass  # a read-only cache: measured again next time, never an error
