"""Which dtype the vision tower runs in: bf16 where the hardware does bf16 GEMMs fast, fp32 elsewhere."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import torch

PRECISIONS = ("auto", "fp32", "bf16")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
# CPU flags of native bf16 matrix instructions (Linux /proc/cpuinfo names).
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none, e.g. macOS)."""
    path = Path("/proc/cpuinfo")
    if not path.is_file():
        return frozenset()
    for line in path.read_text().splitlines():
        if line.startswith(("flags", "Features")):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def bf16_supported(device: torch.device | str) -> bool:
    """True where bf16 matrix products run natively: CUDA with bf16, or a CPU with AVX512-BF16 / AMX.

    Without these instructions oneDNN emulates bf16 and a GEMM is many times slower than fp32
    (measured: ~50x on an AVX2-only EPYC), so "auto" must not pick it there.
    """
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        capability = torch.backends.cpu.get_cpu_capability()
        return bool(set(CPU_BF16_FLAGS) & cpu_flags()) or "AMX" in capability
    return False


def resolve_precision(requested: str, device: torch.device | str, backbone_kind: str) -> str:
    """Resolve "auto" | "fp32" | "bf16" to "fp32" or "bf16" for a backbone on a device.

    Args:
        requested: what the user asked for; "bf16" is honoured even where it is slow.
        device: where the detector runs.
        backbone_kind: "vit" or "resnet". On CPU, "auto" keeps a ResNet in fp32: its small
            convolutions measured 10-17x slower in bf16 than fp32 even on an AVX512-BF16 EPYC,
            while a ViT's large GEMMs run ~4x faster.
    """
    if requested not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {requested!r}")
    if requested != "auto":
        return requested
    device = torch.device(device)
    if not bf16_supported(device):
        return "fp32"
    if device.type == "cpu" and backbone_kind != "vit":
        return "fp32"
    return "bf16"
