"""The machine's matrix-multiply rate in fp32 and bf16: the ceiling a backbone's FLOP rate is compared with."""

from __future__ import annotations

import time

import torch

GEMM_SIZES = (256, 512, 1024, 2048, 4096)


def gemm_rate(dtype: torch.dtype, seconds: float = 1.0, device: str = "cpu") -> dict:
    """Measured FLOP/s of a square `torch.mm` in `dtype` on `device`, best of repeated calls.

    The size grows (x2, so x8 the work) while the next size's call would still take under
    `seconds / 4`: an emulated (slow) dtype is measured on a small matrix within about `seconds`.
    """
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
    best, spent = float("inf"), 0.0
    while spent < seconds:
        start = time.perf_counter()
        torch.mm(a, b)
        _sync(device)
        took = time.perf_counter() - start
        best, spent = min(best, took), spent + took
    return {"dtype": str(dtype).replace("torch.", ""), "size": n, "flops_per_s": 2 * n**3 / best}


def _sync(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
