"""onnxruntime as a runtime: ovdet's ONNX graph, fp32 or int8 by onnxruntime's own quantiser.

int8: a ResNet tower's convolutions are quantised statically (QDQ, ranges observed on calibration images);
a ViT's weight matrices dynamically (per-call activation scales), as torch's int8 path does. The CUDA and
TensorRT providers are used on a GPU where the installed onnxruntime has them.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from ovdet.runtime.engine import RuntimeEngine
from ovdet.runtime.runtime_graph import VARIANTS

MODEL = "model.onnx"


def session_options(threads: int | None = None):
    """onnxruntime SessionOptions for ovdet: `threads` intra-op threads (None: onnxruntime's default) that sleep
    when a run ends. onnxruntime's threads spin-wait after each run by default, and that spinning takes the
    cores from whatever runs next: on a 2-core AMX Xeon an OpenVINO call made right after an onnxruntime call took
    0.046 s instead of 0.024 s, and ovdet's own pre- and post-processing run next to every onnxruntime call."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return options


class OnnxRuntimeEngine(RuntimeEngine):
    name = "onnxruntime"
    precisions = ("fp32", "int8")

    def build(self, folder: Path, variant: str) -> None:
        fp32 = folder / "fp32.onnx"
        self.export_fp32(fp32, variant)
        if self.precision == "int8":
            self._quantise(fp32, folder / MODEL, variant)
            fp32.unlink()
        else:
            shutil.move(fp32, folder / MODEL)

    def load(self, folder: Path, variant: str):
        import onnxruntime as ort
        import torch

        options = session_options(torch.get_num_threads())
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        session = ort.InferenceSession(str(folder / MODEL), options, providers=self.providers())
        outputs = list(VARIANTS[variant][1])
        return lambda feeds: session.run(outputs, feeds)

    def providers(self) -> list[str]:
        """CPU, or on a CUDA device the TensorRT / CUDA providers this onnxruntime has."""
        import onnxruntime as ort

        if self.detector.device.type != "cuda":
            return ["CPUExecutionProvider"]
        have = ort.get_available_providers()
        wanted = [p for p in ("TensorrtExecutionProvider", "CUDAExecutionProvider") if p in have]
        return wanted + ["CPUExecutionProvider"]

    def _quantise(self, source: Path, target: Path, variant: str) -> None:
        from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static
        from onnxruntime.quantization.calibrate import CalibrationDataReader

        if not self.detector.backbone.convolutional:
            quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"])
            return
        feeds = iter(self.calibration_feeds(variant))

        class Reader(CalibrationDataReader):
            def get_next(self):
                return next(feeds, None)

        quantize_static(str(source), str(target), Reader(), quant_format=QuantFormat.QDQ, op_types_to_quantize=["Conv"],
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True)
