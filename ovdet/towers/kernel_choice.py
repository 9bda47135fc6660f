"""Which fp32/bf16 Linear kernel a CPU runs faster: torch's default (MKL for fp32) or oneDNN's prepacked weights.

Neither wins everywhere: on an AVX512-BF16 AMD EPYC, MKL's fp32 path runs AVX2 code and oneDNN's prepacked
layers are 2x faster; on a 2-core Intel Xeon (AVX512-VNNI) MKL's fp32 beat them, and on an AMX Xeon MKL ran a
B/32 tower in 0.46 s against 0.69 s packed. So the choice is measured on the CPU at hand, once per CPU, torch
version, dtype and set of layer shapes, and kept in ovdet's cache (`kernel_choice.json`); later runs read it back.
OVDET_LINEAR_KERNEL=packed|plain overrides it.

The measurement times every Linear shape of the module at its token count, weighted by how often it occurs, with
the two kernels called in turn and the best of several rounds kept. Timing only the largest layer, one kernel
after the other (the first version), picked oneDNN on that AMX Xeon in a run where MKL's timings swung from 8.4
to 13.5 ms: a choice that is cached must not hang on a minute's noise.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections import Counter

import torch
from torch import nn

from ovdet import file_mark

CHOICE_FILE = "kernel_choice.json"
OVERRIDE_ENV = "OVDET_LINEAR_KERNEL"
_ROUNDS, _CALLS = 5, 3
# Packing holds a second copy of the weights, so it must win by 5 %: on an AMX Xeon bf16 layers measured 64 against
# 65 ms packed / plain while the whole B/32 tower ran 0.15 s plain against 0.20 s packed.
PACKED_MARGIN = 0.95


def packed_is_faster(module: nn.Module, tokens: int, dtype: torch.dtype = torch.float32) -> bool:
    """Whether oneDNN's prepacked Linear layers beat the plain ones on this CPU for `module`'s Linear layers with
    `tokens` rows (measured once, then cached)."""
    forced = os.environ.get(OVERRIDE_ENV, "").strip().lower()
    if forced in ("packed", "plain"):
        return forced == "packed"
    shapes = Counter((m.in_features, m.out_features) for m in module.modules() if isinstance(m, nn.Linear))
    if not shapes:
        return False
    layers = sorted([d_in, d_out, n] for (d_in, d_out), n in shapes.items())
    key = _key([tokens, layers], dtype)
    path = _path()
    choices = _read(path)
    if key not in choices:
        seconds = _measure(tokens, layers, dtype)
        choices[key] = {"packed": seconds["packed"] < PACKED_MARGIN * seconds["plain"], "seconds": seconds, "tokens": tokens,
                        "layers": layers, "dtype": str(dtype)}
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
        tokens, d_in, d_out = shape
        best = {name: min(_measure(tokens, [[d_in, d_out, 1]], dtype).values())
                for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16))}
        choices[key] = {"packed": best["bf16"] < best["fp32"], "seconds": best, "shape": list(shape),
                        "question": "bf16 faster than fp32"}
        _write(path, choices)
    return choices[key]["packed"]


def _measure(tokens: int, layers: list[list[int]], dtype: torch.dtype) -> dict[str, float]:
    """Seconds of one pass through `layers` ([d_in, d_out, count] each) at `tokens` rows, plain and packed: per
    shape the best of _ROUNDS rounds in which the two kernels are called in turn (the order alternating), so a
    swing in the machine's speed hits both alike."""
    from ovdet.towers.cpu_linear import pack

    generator = torch.Generator().manual_seed(0)
    total = {"plain": 0.0, "packed": 0.0}
    with torch.no_grad():  # not inference_mode: packing reads the weight's version counter
        for d_in, d_out, count in layers:
            x = torch.randn(tokens, d_in, generator=generator).to(dtype)
            plain = nn.Linear(d_in, d_out).to(dtype).eval().requires_grad_(False)
            packed = nn.Linear(d_in, d_out).to(dtype).eval().requires_grad_(False)
            packed.load_state_dict(plain.state_dict())
            pack(packed)
            kernels = {"plain": plain, "packed": packed}
            best = {name: float("inf") for name in kernels}
            for name in kernels:
                kernels[name](x)  # warm-up: packing, MKL's and oneDNN's first-call set-up
            for round_ in range(_ROUNDS):
                for name in (("plain", "packed") if round_ % 2 else ("packed", "plain")):
                    start = time.perf_counter()
                    for _ in range(_CALLS):
                        kernels[name](x)
                    best[name] = min(best[name], (time.perf_counter() - start) / _CALLS)
            for name in total:
                total[name] += count * best[name]
    return total


def _key(shape, dtype) -> str:  # "v2": choices cached by the first, single-layer measurement are measured again
    from ovdet.models.precision import usable_cpu_flags
    from ovdet.runtime.runtime_choice import _cpu_name

    parts = [_cpu_name(), sorted(usable_cpu_flags()), torch.__version__, torch.get_num_threads(), list(shape), str(dtype), "v2"]
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
