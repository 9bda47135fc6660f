"""The runtime names users pass (`--runtime`, `Detector.set_runtime`) and the extra that installs each."""

from __future__ import annotations

import importlib.util

from ovdet.errors import OvdetError

RUNTIMES = ("torch", "onnxruntime", "openvino", "auto")
RUNTIME_HELP = ("what runs the network: torch, onnxruntime or openvino (ovdet's own exported graph, cached on disk), "
                "or auto: the fastest installed one, measured once on this machine and cached")
# the Python module each runtime needs, and the ovdet extra that installs it
_MODULES = {"onnxruntime": ("onnxruntime", "onnx"), "openvino": ("openvino", "openvino")}


def check_runtime(name: str) -> str:
    """`name` if it is a runtime ovdet knows (one line naming the choices otherwise); cheap, no imports."""
    if name not in RUNTIMES:
        raise OvdetError(f"runtime {name!r} is not one ovdet runs on; use one of {', '.join(RUNTIMES)}")
    return name


def installed(name: str) -> bool:
    """Whether a runtime can run here (torch always can)."""
    module = _MODULES.get(name, (None,))[0]
    return module is None or importlib.util.find_spec(module) is not None


def require(name: str) -> None:
    """One line naming the extra to install when a runtime's package is missing."""
    if not installed(name):
        module, extra = _MODULES[name]
        raise OvdetError(f"--runtime {name} needs the {module} package: pip install 'ovdet[{extra}]' "
                         f"(in a clone: pip install -e '.[{extra}]')")
