"""The machine's matrix-multiply rate in fp32 and bf16: the ceiling a backbone's FLOP rate is compared with."""

from __future__ import annotations

import time

import torch

GEMM_SIZES = (256, 512, 1024, 2048, 4096)


def gemm_rate(dtype: torch.dtype, seconds: float = 1.0, device: str = "cpu") -> dict:
    """The best GEMM rate this torch reaches in `dtype` on `device`: `torch.mm`, and on a CPU also
    oneDNN's prepacked Linear (what ovdet's towers run: `ovdet.towers.cpu_linear`). In fp32 torch.mm
    goes to MKL, whose AVX2 kernels on an AMD AVX512 CPU reached half of oneDNN's rate, so torch.mm
    alone would understate the ceiling. Returns {"flops_per_s": best, "size", "mm_flops_per_s",
    "packed_flops_per_s" (None where not measured), "dtype"}."""
    mm = _mm_rate(dtype, seconds, device)
    packed = _packed_rate(dtype, mm["size"], seconds) if torch.device(device).type == "cpu" else None
    return {**mm, "mm_flops_per_s": mm["flops_per_s"], "packed_flops_per_s": packed,
            "flops_per_s": max(mm["flops_per_s"], packed or 0.0)}


def _packed_rate(dtype: torch.dtype, n: int, seconds: float) -> float | None:
    """FLOP/s of oneDNN's prepacked Linear on an n x n problem (None where this torch has no oneDNN)."""
    from ovdet.towers.cpu_linear import packing_available

    if not packing_available():
        return None
    x, w = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    packed = torch.ops.mkldnn._reorder_linear_weight(w, n)
    return 2 * n**3 / _best(lambda: torch.ops.mkldnn._linear_pointwise(x, packed, None, "none", [], ""), seconds, "cpu")


def _best(call, seconds: float, device: str) -> float:
    """Fastest of repeated calls within about `seconds` (after one warm-up)."""
    call()
    best, spent = float("inf"), 0.0
    while spent < seconds:
        start = time.perf_counter()
        call()
        _sync(device)
        took = time.perf_counter() - start
        best, spent = min(best, took), spent + took
    return best


def _mm_rate(dtype: torch.dtype, seconds: float, device: str) -> dict:
    """FLOP/s of a square `torch.mm`. The size grows (x2, so x8 the work) while the next size's call
    would still take under `seconds / 4`: an emulated (slow) dtype is measured on a small matrix."""
    for n in GEMM_SIZES:
        a, b = torch.randn(n, n).to(device, dtype), torch.randn(n, n).to(device, dtype)
        torch.mm(a, b)  # warm-up: the library picks its kernel
        took = []
        for _ in range(2):  # the faster of two: one call slowed by another process must not stop the growth
            start = time.perf_counter()
            torch.mm(a, b)
            _sync(device)
            took.append(time.perf_counter() - start)
        if 8 * min(took) > seconds / 4:
            break
    best = _best(lambda: torch.mm(a, b), seconds, device)
    return {"dtype": str(dtype).replace("torch.", ""), "size": n, "flops_per_s": 2 * n**3 / best}


def _sync(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
