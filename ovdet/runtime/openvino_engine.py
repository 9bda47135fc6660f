"""OpenVINO as a runtime: ovdet's ONNX graph converted to OpenVINO IR, fp32, bf16 (where the CPU has it) or int8
by NNCF, OpenVINO's own quantiser, calibrated once on calibration images and cached as IR."""

from __future__ import annotations

from pathlib import Path

from ovdet.runtime.engine import RuntimeEngine
from ovdet.runtime.runtime_graph import VARIANTS

MODEL = "model.xml"
# what stays fp32 in a convolutional tower's int8 graph: the element-wise ops and pools. Convolutions and matrix
# products run int8 (held-out ShapeWorld AP50 of the embedded model: fp32 75.6, convolutions only 75.4, with the
# matrix products 75.1, the graph 1.3x faster at batch 8 on an EPYC); NNCF's default scope, everything, lost 6 points
_FP32_OPS = ("Add", "Multiply", "Subtract", "Divide", "Power", "ReduceMean", "AvgPool", "MaxPool")
_HINTS = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}  # int8 layers run int8; the rest stays fp32


class OpenVinoEngine(RuntimeEngine):
    name = "openvino"
    precisions = ("fp32", "bf16", "int8")

    def build(self, folder: Path, variant: str) -> None:
        import openvino as ov

        onnx_path = folder / "fp32.onnx"
        self.export_fp32(onnx_path, variant)
        model = ov.convert_model(str(onnx_path))
        if self.precision == "int8":
            model = self._quantise(model, variant)
        ov.save_model(model, str(folder / MODEL), compress_to_fp16=False)
        onnx_path.unlink()

    def load(self, folder: Path, variant: str):
        import openvino as ov
        import torch

        config = {"INFERENCE_PRECISION_HINT": _HINTS[self.precision], "PERFORMANCE_HINT": "LATENCY",
                  "INFERENCE_NUM_THREADS": torch.get_num_threads()}
        compiled = ov.Core().compile_model(str(folder / MODEL), "CPU", config)
        request = compiled.create_infer_request()
        outputs = [compiled.output(name) for name in VARIANTS[variant][1]]

        def run(feeds):
            result = request.infer(feeds)
            return [result[o] for o in outputs]

        return run

    def _quantise(self, model, variant: str):
        import nncf

        feeds = self.calibration_feeds(variant)
        if self.detector.backbone.convolutional:
            # convolutions and matrix products (see _FP32_OPS); element-wise ops, pools and region pooling stay fp32
            kind = {"ignored_scope": nncf.IgnoredScope(types=list(_FP32_OPS), validate=False),
                    "preset": nncf.QuantizationPreset.MIXED}  # asymmetric activations, as onnxruntime's uint8
        else:
            kind = {"model_type": nncf.ModelType.TRANSFORMER}
        return nncf.quantize(model, nncf.Dataset(feeds), subset_size=len(feeds), **kind)
