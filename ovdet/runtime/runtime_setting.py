"""`Detector.set_runtime`: which runtime runs the network, at which precision.

The torch side of a detector handed to another runtime stays fp32: it exports the graph and embeds texts and
exemplars; the precision asked for is what the runtime runs ("auto" resolves as torch resolves it, then to what
that runtime has: onnxruntime has no bf16 on CPUs, so "auto" means fp32 there).
"""

from __future__ import annotations

import importlib

from ovdet.errors import OvdetError
from ovdet.runtime.runtime_names import check_runtime, require

ENGINES = {"onnxruntime": ("ovdet.runtime.onnxruntime_engine", "OnnxRuntimeEngine"),
           "openvino": ("ovdet.runtime.openvino_engine", "OpenVinoEngine")}


def engine_class(name: str):
    module, cls = ENGINES[name]
    return getattr(importlib.import_module(module), cls)


def runtime_precision(detector, runtime: str, requested: str) -> str:
    """What `runtime` runs for a requested precision ("auto", "fp32", "bf16", "int8")."""
    from ovdet.models.precision import resolve_precision
    from ovdet.runtime.engine import check_precision
    kind = "resnet" if detector.backbone.convolutional else "vit"
    fine_tuned = any(p.requires_grad for p in detector.backbone.vision.parameters())
    resolved = resolve_precision(requested, detector.device, kind, fine_tuned)
    if runtime == "torch":
        return resolved
    cls = engine_class(runtime)
    if requested == "auto" and resolved not in cls.precisions:
        resolved = "fp32"
    return check_precision(cls, resolved)


def set_runtime(detector, name: str = "torch", precision: str | None = None, calibration: list | None = None) -> str:
    """Run `detector` on runtime `name` ("auto": measured once on this machine, see `runtime_choice`) at
    `precision` (None: the one last asked for with `set_precision`). Returns the runtime in force."""
    from ovdet.models.precision import set_precision

    check_runtime(name)
    requested = precision or detector.__dict__.get("_requested_precision", "auto")
    detector.__dict__["_requested_precision"] = requested
    if name == "auto":
        from ovdet.runtime.runtime_choice import choose_runtime

        set_precision(detector, "fp32")  # the choice is keyed by the fp32 weights (an int8 tower has others)

        name = choose_runtime(detector, requested, calibration)
    detector.__dict__.pop("_engine", None)
    if name == "torch":
        set_precision(detector, requested, calibration)
        detector.runtime = "torch"
        return name
    require(name)
    if name == "openvino" and detector.device.type != "cpu":
        raise OvdetError(f"--runtime openvino runs on CPUs here; the model is on {detector.device.type}: use "
                         "--device cpu, or --runtime torch / onnxruntime on a GPU")
    resolved = runtime_precision(detector, name, requested)
    set_precision(detector, "fp32")  # the torch side exports and embeds in fp32
    detector.__dict__["_engine"] = engine_class(name)(detector, resolved, calibration)
    detector.runtime = name
    return name
