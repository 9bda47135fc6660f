"""Linear layers with their weights laid out once for oneDNN, for inference on a CPU.

A plain `nn.Linear` on a CPU pays for its weight layout on every call, and in fp32 torch hands the
GEMM to MKL. Measured (2 threads, AVX512-BF16 AMD EPYC, one layer's shapes): bf16 at 577 tokens
(B/32, batch 1) 540-740 GFLOP/s plain, 790-900 prepacked, identical there (on an AMX Xeon a few bf16
outputs of a long GEMM differ by one rounding step); fp32 170-200 GFLOP/s
through MKL (its AVX2 kernels on this AMD CPU), 410-445 through oneDNN's AVX512 kernels, within
fp32 rounding (summation order). The class of each Linear is swapped for `PackedLinear` (weights and
state_dict keys unchanged, `unpack` restores it); anything but frozen inference on a CPU, and
tracing, export and compilation, take the plain forward.
"""

from __future__ import annotations

import torch
from torch import nn

PACKED = "_ovdet_packed"  # (packed weight, the weight's version counter when it was packed)


def packing_available() -> bool:
    """oneDNN's prepacked linear is built into this torch."""
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def packable_dtypes() -> tuple[torch.dtype, ...]:
    """fp32 always; bf16 only where oneDNN has a bf16 linear (AVX512-BW/VL/DQ or AVX-NE-CONVERT, honouring
    ONEDNN_MAX_CPU_ISA): on an AVX2-only CPU packing a bf16 weight raises, so those layers stay plain."""
    return (torch.float32, torch.bfloat16) if torch.ops.mkldnn._is_mkldnn_bf16_supported() else (torch.float32,)


class PackedLinear(nn.Linear):
    """nn.Linear whose inference forward uses a oneDNN-packed copy of its weight (repacked if the weight changed)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        state = self.__dict__.get(PACKED)
        weight = self.weight
        if (state is None or x.device.type != "cpu" or (torch.is_grad_enabled() and weight.requires_grad)
                or torch.jit.is_tracing() or torch.compiler.is_compiling() or torch.onnx.is_in_onnx_export()):
            return super().forward(x)
        if x.dtype != weight.dtype:
            if not (torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == weight.dtype):
                return super().forward(x)
            x = x.to(weight.dtype)  # what autocast would do for F.linear
        packed, version = state
        if version != weight._version or packed.dtype != weight.dtype:  # weights loaded or cast since packing
            if weight.dtype not in packable_dtypes():
                return super().forward(x)
            packed = _pack(self)
        bias = None if self.bias is None else self.bias.to(weight.dtype)
        return torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")

    def __getstate__(self):
        """Copies and pickles leave the packed weight out (oneDNN's opaque tensors have no storage to copy);
        they run the plain forward until packed again."""
        state = dict(super().__getstate__())
        state.pop(PACKED, None)
        return state


def _pack(linear: nn.Linear) -> torch.Tensor:
    weight = linear.weight.detach()
    packed = torch.ops.mkldnn._reorder_linear_weight(weight, 1)  # the layout suits any row count (tested)
    linear.__dict__[PACKED] = (packed, linear.weight._version)
    return packed


def pack(module: nn.Module) -> int:
    """Give every CPU fp32 nn.Linear in `module` (bf16 too, where `packable_dtypes` has it) the packed forward
    (idempotent); returns how many."""
    if not packing_available():
        return 0
    count, dtypes = 0, packable_dtypes()
    for linear in module.modules():
        if type(linear) in (nn.Linear, PackedLinear) and linear.weight.device.type == "cpu" \
                and linear.weight.dtype in dtypes:
            linear.__class__ = PackedLinear
            _pack(linear)
            count += 1
    return count


def unpack(module: nn.Module) -> None:
    """Undo `pack`: plain nn.Linear again, the packed copies freed."""
    for linear in module.modules():
        if type(linear) is PackedLinear:
            linear.__dict__.pop(PACKED, None)
            linear.__class__ = nn.Linear
