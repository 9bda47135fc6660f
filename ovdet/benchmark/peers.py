"""The peers ovdet is timed against: transformers' own OWL-ViT / OWLv2 graph, converted whole as each runtime's
docs convert it, on the identical weights ovdet loads.

- "openvino": `openvino.convert_model(model, example_input=...)` of the whole `OwlViTForObjectDetection` /
  `Owlv2ForObjectDetection` (OpenVINO's OWL-ViT notebook), compiled fp32 (INFERENCE_PRECISION_HINT f32).
- "openvino-int8": that model quantised by NNCF (`nncf.quantize`, transformer preset), OpenVINO's own int8.
- "onnxruntime": the model exported with `torch.onnx.export` (dynamo) and run by onnxruntime's CPU provider.
Each takes the transformers processor's inputs every call (text re-encoded, as the whole graph has it), and its
outputs are compared with transformers' on the same inputs in the same run.
"""

from __future__ import annotations

import numpy as np
import torch

PEERS = ("openvino", "openvino-int8", "onnxruntime")
_INPUTS = ("input_ids", "pixel_values", "attention_mask")
_OUTPUTS = ("logits", "pred_boxes")


def owl_model_and_processor(spec: dict):
    """transformers' OWL detector and processor of the spec (the folder ovdet's side loads too)."""
    import transformers

    folder = spec["owl_dir"] if spec["model"] == "owlv2" else spec["owlvit_dir"]
    prefix = "Owlv2" if spec["model"] == "owlv2" else "OwlViT"
    model = getattr(transformers, f"{prefix}ForObjectDetection").from_pretrained(folder, attn_implementation="sdpa").eval()
    if spec["model"] == "owlv2":
        processor = transformers.Owlv2Processor.from_pretrained(folder)
    else:
        from ovdet.benchmark.measure import owlvit_processor

        processor = owlvit_processor(spec)
    return model, processor


def peer_step(spec: dict, peer: str, images: list, names: list[str]):
    """(step, agreement): one call of `peer` on the processor's inputs, and its largest output difference to
    transformers, relative to the reference's largest value, per output."""
    model, processor = owl_model_and_processor(spec)

    def inputs():
        encoded = processor(text=[names] * len(images), images=images, return_tensors="pt")
        return {k: encoded[k] for k in _INPUTS}

    example = inputs()
    with torch.inference_mode():
        ref = model(**example)
    run = _compile(peer, model, example)
    got = run({k: v.numpy() for k, v in example.items()})
    agreement = {}
    for name, value in zip(_OUTPUTS, got):
        expected = getattr(ref, name).float().numpy()
        agreement[name] = float(np.abs(np.asarray(value) - expected).max() / max(np.abs(expected).max(), 1e-12))

    def step():
        return run({k: v.numpy() for k, v in inputs().items()})

    return step, agreement


class _DetectionOutputs(torch.nn.Module):
    """The OWL model with its `logits` and `pred_boxes` as a tuple (a tracer takes no ModelOutput)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, pixel_values, attention_mask):
        out = self.model(input_ids=input_ids, pixel_values=pixel_values, attention_mask=attention_mask)
        return tuple(getattr(out, name) for name in _OUTPUTS)


def _compile(peer: str, model, example: dict):
    if peer.startswith("openvino"):
        import openvino as ov

        with torch.no_grad():  # the whole model, traced with its detection outputs as a tuple
            converted = ov.convert_model(_DetectionOutputs(model), example_input=example)
        if peer == "openvino-int8":
            import nncf

            data = nncf.Dataset([{k: v.numpy() for k, v in example.items()}])
            converted = nncf.quantize(converted, data, model_type=nncf.ModelType.TRANSFORMER, subset_size=1)
        compiled = ov.Core().compile_model(converted, "CPU", {"INFERENCE_PRECISION_HINT": "f32",
                                                               "PERFORMANCE_HINT": "LATENCY",
                                                               "INFERENCE_NUM_THREADS": torch.get_num_threads()})
        request = compiled.create_infer_request()
        outputs = [compiled.output(i) for i in range(len(_OUTPUTS))]

        def run(feeds):
            result = request.infer(feeds)
            return [result[o] for o in outputs]

        return run
    if peer == "onnxruntime":
        import shutil
        import tempfile
        import warnings
        from pathlib import Path

        from ovdet.export.onnx import _quiet_exporter, onnx_session

        path = Path(tempfile.mkdtemp(prefix="ovdet-peer-")) / "owl.onnx"
        with warnings.catch_warnings(), torch.no_grad(), _quiet_exporter():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (), str(path), kwargs=example, dynamo=True, input_names=list(_INPUTS),
                              external_data=False)
        # ovdet's CPU session, whose threads sleep after a run: a spinning peer would slow the side after it
        session = onnx_session(path, torch.get_num_threads())
        shutil.rmtree(path.parent, ignore_errors=True)  # the session holds the graph now
        out_names = [o.name for o in session.get_outputs()]
        wanted = [out_names.index(n) if n in out_names else i for i, n in enumerate(_OUTPUTS)]

        def run(feeds):
            result = session.run(None, feeds)
            return [result[i] for i in wanted]

        return run
    raise ValueError(f"unknown peer {peer!r}; use {PEERS}")

