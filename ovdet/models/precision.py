"""Which dtype the vision tower runs in: bf16 where the hardware does bf16 GEMMs fast, fp32 elsewhere."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import torch
from torch import nn

PRECISIONS = ("auto", "fp32", "bf16", "int8")
# CPU flags of native bf16 matrix instructions (Linux /proc/cpuinfo names).
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
# CPU flags of int8 dot-product instructions (VNNI, AMX), with which 8-bit activations do not overflow.
CPU_INT8_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})
# Which of those flags oneDNN may still use under each ONEDNN_MAX_CPU_ISA cap (oneDNN's names); a cap not
# listed here (SSE41, AVX, AVX2, AVX512_CORE) leaves none of them, and DEFAULT / ALL / unset leaves all.
_VNNI, _BF16 = frozenset({"avx512_vnni"}), frozenset({"avx512_vnni", "avx512_bf16"})
_AMX = _BF16 | {"amx_int8", "amx_bf16"}
ONEDNN_ISA_FLAGS = {"AVX2_VNNI": frozenset({"avx_vnni"}), "AVX2_VNNI_2": frozenset({"avx_vnni"}),
                    "AVX512_CORE_VNNI": _VNNI, "AVX512_CORE_BF16": _BF16, "AVX10_1_512": _BF16,
                    "AVX512_CORE_FP16": _BF16, "AVX10_2_512": _BF16, "AVX10_1_512_AMX": _AMX,
                    "AVX512_CORE_AMX": _AMX, "AVX10_1_512_AMX_FP16": _AMX, "AVX512_CORE_AMX_FP16": _AMX,
                    "AVX10_2_512_AMX_2": _AMX}


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


def usable_cpu_flags() -> frozenset[str]:
    """`cpu_flags` less the bf16 / int8 instructions that ONEDNN_MAX_CPU_ISA forbids oneDNN to use.

    So a capped run (ONEDNN_MAX_CPU_ISA=AVX2, as `make test-isa` does) makes the choices an AVX2-only
    CPU would: fp32 for "auto", torch's 7-bit x86 int8 settings, not 8-bit ones that AVX2 would overflow.
    """
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA", "ALL").strip().upper()
    if cap in ("", "ALL", "DEFAULT"):
        return cpu_flags()
    managed = set(CPU_BF16_FLAGS) | CPU_INT8_FLAGS
    return cpu_flags() - (managed - ONEDNN_ISA_FLAGS.get(cap, frozenset()))


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
        return bool(set(CPU_BF16_FLAGS) & usable_cpu_flags()) or "AMX" in capability
    return False


def resolve_precision(requested: str, device: torch.device | str, backbone_kind: str, fine_tuned: bool = False) -> str:
    """Resolve "auto" | "fp32" | "bf16" to "fp32" or "bf16" for a backbone on a device.

    Args:
        requested: what the user asked for; "bf16" is honoured even where it is slow.
        device: where the detector runs.
        backbone_kind: "vit" or "resnet". On CPU, "auto" keeps a ResNet in fp32: its small
            convolutions ran 10-17x slower in bf16 in pretraining, and at inference gain at most
            1.35x on an AVX512-BF16 EPYC (docs/PERFORMANCE.md), while a ViT's GEMMs run 2-3x faster there.
            A ViT gets bf16 only where this CPU measured bf16 GEMMs faster than fp32 (`bf16_is_faster`): a
            2-core Xeon with AVX512-BF16 but no AMX ran them slower.
        fine_tuned: the tower is being trained; bf16 is for inference, so "auto" keeps fp32 and
            "bf16" is refused.
    """
    if requested not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {requested!r}")
    if requested == "int8":
        if torch.device(device).type != "cpu":
            raise ValueError(f"int8 (dynamic quantisation) runs on CPUs only; on {torch.device(device).type} use bf16")
        if fine_tuned:
            raise ValueError("int8 is for inference with a frozen vision tower; this one is being fine-tuned, use fp32")
        return "int8"
    if fine_tuned:
        if requested == "bf16":
            raise ValueError("bf16 is for inference with a frozen vision tower; this one is being fine-tuned, use fp32")
        return "fp32"
    if requested != "auto":
        return requested
    device = torch.device(device)
    if not bf16_supported(device):
        return "fp32"
    if device.type == "cpu" and (backbone_kind != "vit" or not bf16_is_faster()):
        return "fp32"
    return "bf16"


def bf16_is_faster() -> bool:
    """This CPU runs bf16 GEMMs faster than fp32 ones (measured once, cached; `ovdet.towers.kernel_choice`)."""
    from ovdet.towers.kernel_choice import bf16_is_faster as measured

    return measured()


class Bf16Weights:
    """Switches a frozen module's weights between fp32 and bf16, exactly reversibly.

    bf16 casts the weights once (a per-call autocast would recast 88M weights on every image) and
    keeps the fp32 tensors themselves aside, so switching back restores them bit for bit. While in
    bf16, floating inputs from callers outside autocast (crop re-scoring) are cast on entry.
    """

    def __init__(self, module: nn.Module, fp32_output: bool = False):
        self.module = module
        self.fp32_output = fp32_output  # hand fp32 back to fp32 callers (the head's context tower)
        self._fp32: dict | None = None
        self._hooks: list = []

    def set(self, bf16: bool) -> None:
        if bf16 and self._fp32 is None:
            self._fp32 = dict(self.module.state_dict())  # the fp32 tensors themselves, not copies
            self.module.to(torch.bfloat16)
            self._hooks = [self.module.register_forward_pre_hook(_cast_floats_bf16, with_kwargs=True)]
            if self.fp32_output:
                self._hooks.append(self.module.register_forward_hook(_output_fp32))
        elif not bf16 and self._fp32 is not None:
            for hook in self._hooks:
                hook.remove()
            self.module.to(torch.float32).load_state_dict(self._fp32)
            self._fp32 = None


def _cast_floats_bf16(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    def cast(x):
        return x.to(torch.bfloat16) if torch.is_tensor(x) and x.is_floating_point() else x

    return tuple(cast(a) for a in args), {k: cast(v) for k, v in kwargs.items()}


def _output_fp32(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
    return output.float()


def set_precision(detector, precision: str = "auto", calibration: list | None = None) -> str:
    """Run a Detector's vision tower in "bf16", "int8" or "fp32"; "auto" picks bf16 only where it is faster
    (`resolve_precision`), never int8. Call after moving the model to its device.

    bf16 casts the frozen tower's weights once and "fp32" restores them exactly (`Bf16Weights`); int8
    swaps in a quantised copy of the tower and "fp32" swaps the original back: a ViT's Linear layers
    quantised dynamically (`int8_tower`), a ResNet's convolutions statically, their activation ranges
    taken from `calibration` images (PIL images; default `default_calibration_images`, ShapeWorld
    scenes: pass photos for a tower trained on photos). bf16 also covers the head's context tower (its
    3x3 convolutions); the rest of the head, the text tower and every output stay fp32, and saving always
    writes the fp32 weights. On a CPU the Linear layers of the tower and the head
    then run with oneDNN-prepacked weights (`ovdet.towers.cpu_linear`: bf16 and fp32 within one rounding of
    the plain layer). Returns the precision now in force.
    """
    from ovdet.towers.cpu_linear import pack, unpack
    from ovdet.towers.vision_resnet import CLIPResNetBackbone

    backbone = detector.backbone
    state = detector.__dict__.setdefault("_precision_state", {"fp32": backbone.vision, "int8": None})
    if backbone.vision is not state["fp32"]:
        backbone.vision = state["fp32"]  # leave int8 first
    vision = backbone.vision
    kind = "resnet" if backbone.convolutional else "vit"
    resolved = resolve_precision(precision, detector.device, kind, any(p.requires_grad for p in vision.parameters()))
    weights = detector.__dict__.setdefault("_bf16_weights", Bf16Weights(vision))
    weights.set(resolved == "bf16")
    if getattr(detector.head, "context", None) is not None:  # the head's 3x3 convolutions: a third of a ResNet
        # detector's call, 4x faster in bf16 on an AVX512-BF16 EPYC; its MLPs, scores and outputs stay fp32
        context = detector.__dict__.setdefault("_bf16_context", Bf16Weights(detector.head.context, fp32_output=True))
        context.set(resolved == "bf16")
    unpack(vision)  # quantisation and casts want plain nn.Linear layers
    if detector.device.type == "cpu" and isinstance(backbone, CLIPResNetBackbone):
        # oneDNN's convolutions run channels-last without reordering every map: on an AMX Xeon the embedded model
        # took 32.9 instead of 37.5 ms an image at batch 1 (22.0 instead of 24.7 at batch 8). Saving is unaffected:
        # every writer makes its tensors contiguous.
        for module in (vision, getattr(detector.head, "context", None)):
            if module is not None:
                module.to(memory_format=torch.channels_last)
    if resolved == "int8":
        if state["int8"] is None or calibration is not None:
            state["int8"] = (int8_resnet_tower(detector, vision, calibration)
                             if isinstance(backbone, CLIPResNetBackbone) else int8_tower(vision))
        backbone.vision = state["int8"]
    on_cpu = detector.device.type == "cpu"
    if on_cpu:  # oneDNN-prepacked Linear weights where this CPU runs them faster (measured once, cached)
        from ovdet.towers.kernel_choice import packed_is_faster

        tokens = (detector.image_size // backbone.stride) ** 2
        on_cpu = packed_is_faster(state["fp32"], tokens, torch.bfloat16 if resolved == "bf16" else torch.float32)
    for module in (backbone.vision, detector.head):  # (ovdet.towers.cpu_linear)
        if on_cpu:
            pack(module)
        else:
            unpack(module)
    detector.precision = resolved
    return resolved


def int8_tower(vision: nn.Module) -> nn.Module:
    """A copy of a frozen tower whose Linear layers are int8 with per-call activation scales (torch's
    dynamic quantisation: VNNI / AMX int8 GEMMs on x86); for ViT towers (ResNets: `int8_resnet_tower`)."""
    import warnings

    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization's deprecation notice: nothing a user can act on
        return quantize_dynamic(vision, {nn.Linear}, dtype=torch.qint8, inplace=False).eval()


def int8_resnet_tower(detector, vision: nn.Module, calibration: list | None) -> nn.Module:
    """A ResNet tower with int8 convolutions, calibrated on `calibration` images (see `ovdet.towers.resnet_int8`)."""
    from ovdet.towers.resnet_int8 import calibration_batches, default_calibration_images, int8_resnet

    images = default_calibration_images() if calibration is None else list(calibration)
    batches = calibration_batches(detector.preprocessor, detector.backbone.crop_size, images)
    return int8_resnet(vision, batches, int8_backend())


def int8_backend() -> str:
    """torch's quantised settings for static int8: "onednn" (8-bit activations) where int8 dot products cannot
    overflow (VNNI, AMX), else torch's 7-bit "x86" default."""
    return "onednn" if CPU_INT8_FLAGS & usable_cpu_flags() else "x86"


def set_compile(detector, enabled: bool = True, **options) -> None:
    """Compile a Detector's vision backbone with `torch.compile` (`options`: mode, dynamic, ...), or undo it.

    In place (`nn.Module.compile`), so weights and state_dict keys are unchanged. The first call per
    input shape pays the compilation (tens of seconds to minutes on a CPU). Call it after
    `set_precision`: with `options={"freezing": True}` later weight changes are not seen.
    """
    if enabled:
        detector.backbone.compile(**options)
    else:
        detector.backbone._compiled_call_impl = None  # what nn.Module.compile set; None restores eager calls
