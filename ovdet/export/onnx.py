"""Export a Detector to ONNX and check the file against onnxruntime.

Two variants, both fp32, with a dynamic batch axis (see below for crop re-scoring):
- `image`: pixel_values [B, 3, S, S] -> pred_boxes, logits, objectness, with the vocabulary's
  text embeddings baked in as a constant (a fixed vocabulary such as LVIS's 1203 names).
- `embeds`: (pixel_values, query_embeds [Q, E]) -> the same outputs; Q is dynamic, so any
  vocabulary embedded with `ovdet embed-vocab` (or `Detector.encode_queries`) can be fed in.
Crop re-scoring (the embedded ResNet model) is exported too, with its reference names baked in:
top-k, roi_align and the CLIP crop encoder all have ONNX ops, and its boxes reach roi_align as one
[B*K, 5] tensor, so the batch stays dynamic there as well. Text encoding and postprocess (threshold, NMS) stay outside the file.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ovdet import file_mark
from ovdet.box_ops import ensure_torchvision
from ovdet.safe_write import atomic_write_bytes

VARIANTS = ("image", "embeds")
OUTPUT_NAMES = ("pred_boxes", "logits", "objectness")


class ExportableDetector(nn.Module):
    """The inference path of a Detector as a plain tensor -> tuple module, for export. It calls the
    one scoring path (`ovdet.models.scoring.score`), so the file scores as `Detector.predict` does.

    Args:
        detector: an `ovdet.models.detector.Detector` (its crop re-scorer, if any, is applied).
        query_embeds: [Q, E] L2-normalised embeddings to bake in; None makes them an input.
        rescore: apply the detector's crop re-scorer; False exports the head's scores alone.
        reference_embeds: [R, E] the re-scorer's reference names (see `reference_embeds`), baked in.
    """

    def __init__(self, detector: nn.Module, query_embeds: torch.Tensor | None = None, rescore: bool = True,
                 reference_embeds: torch.Tensor | None = None):
        super().__init__()
        self.detector = detector
        self.rescore = rescore and detector.rescorer is not None
        self.register_buffer("baked", None if query_embeds is None else query_embeds.detach().float().clone())
        reference = reference_embeds if self.rescore else None
        self.register_buffer("reference", None if reference is None else reference.detach().float().clone())

    def forward(self, pixel_values: torch.Tensor, query_embeds: torch.Tensor | None = None):
        from ovdet.models.scoring import QueryBank, score

        queries = self.baked if query_embeds is None else query_embeds  # [Q, E]
        out = score(self.detector, pixel_values, QueryBank(queries, reference=self.reference), rescore=self.rescore)
        return out["pred_boxes"], out["logits"], out["objectness"]


def reference_embeds(detector, names: list[str] | None = None, templates=None) -> torch.Tensor | None:
    """The re-scorer's reference names embedded, [R, E], as `predict` uses them: all of them (a baked
    vocabulary that repeats a reference name drops it by embedding and weighs it as a base name, see
    CropRescorer). `names` is kept for callers that pass the baked vocabulary. None without re-scoring or
    reference names."""
    if detector.rescorer is None or not detector.rescorer.reference:
        return None
    return detector.encode_queries(detector.rescorer.reference, templates)


def export_onnx(
    detector: nn.Module,
    path: str | Path,
    variant: str = "image",
    query_embeds: torch.Tensor | None = None,
    rescore: bool = True,
    opset: int = 18,
    reference: torch.Tensor | None = None,
) -> Path:
    """Write `detector` as an ONNX file (see the module docstring for the variants), marked as ovdet's in its
    `metadata_props` and written whole or not at all (a temp file, then a rename). Callers check the target
    first (`file_mark.check_replaceable_file`): this function replaces whatever is at `path`.

    Args:
        variant: "image" (needs `query_embeds` [Q, E] to bake in) or "embeds".
        query_embeds: the baked vocabulary for "image"; for "embeds" an example input (optional).
        rescore: keep the crop re-scoring of a detector that has one.
        reference: [R, E] reference-name embeddings to bake (`reference_embeds`); None: all of the model's.
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    if variant == "image" and query_embeds is None:
        raise ValueError("the 'image' variant bakes a vocabulary in: pass query_embeds (e.g. from encode_queries)")
    if detector.precision != "fp32":
        raise ValueError(f"export an fp32 detector (this one runs in {detector.precision}); call set_precision('fp32')")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    detector = detector.eval().cpu()
    size = detector.image_size
    example_queries = query_embeds if query_embeds is not None else torch.randn(3, detector.text_encoder.embed_dim)
    pixels = torch.zeros(2, 3, size, size)  # 2: a 1 would be specialised
    if reference is None:
        reference = reference_embeds(detector)
    batch = torch.export.Dim("batch", min=1, max=1024)
    queries = torch.export.Dim("queries", min=1, max=100000)
    if variant == "image":
        module, args = ExportableDetector(detector, query_embeds, rescore, reference), (pixels,)
        inputs, shapes = ["pixel_values"], {"pixel_values": {0: batch}}
    else:
        module, args = ExportableDetector(detector, None, rescore, reference), (pixels, example_queries.float())
        inputs = ["pixel_values", "query_embeds"]
        shapes = {"pixel_values": {0: batch}, "query_embeds": {0: queries}}
    ensure_torchvision()  # torchvision's fake kernels, which tracing its roi_align needs
    with tempfile.TemporaryDirectory(prefix=f".{path.name}-", dir=path.parent) as tmp:
        raw = Path(tmp) / path.name  # the target is replaced only by a finished, marked file
        with warnings.catch_warnings(), torch.no_grad(), _quiet_exporter():
            warnings.simplefilter("ignore")  # tracer chatter about Python-side shape checks
            torch.onnx.export(
                module, args, str(raw), dynamo=True, opset_version=opset, input_names=inputs,
                output_names=list(OUTPUT_NAMES), dynamic_shapes=shapes, external_data=False, verbose=False,
            )  # fmt: skip
        atomic_write_bytes(path, marked_onnx(raw).SerializeToString())
    return path


def marked_onnx(path: Path):
    """The ONNX model at `path` with ovdet's mark in its `metadata_props` (see `ovdet.file_mark`)."""
    import onnx

    model = onnx.load(str(path))
    kept = [p for p in model.metadata_props if p.key != file_mark.MARK_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    model.metadata_props.add(key=file_mark.MARK_KEY, value=file_mark.MARK_VALUE)
    return model


@contextlib.contextmanager
def _quiet_exporter():
    """Silence the exporter's progress lines ("Skipping constant folding ...", printed per pass) on stdout
    and its INFO logs; errors still raise."""
    import logging

    loggers = [logging.getLogger(name) for name in ("torch.onnx", "onnxscript", "onnx_ir")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def onnx_session(path: str | Path, threads: int | None = None):
    """An onnxruntime CPU session for `path` (`threads`: intra-op threads, None = onnxruntime's default)."""
    import onnxruntime as ort

    from ovdet.runtime.onnxruntime_engine import session_options

    return ort.InferenceSession(str(path), session_options(threads), providers=["CPUExecutionProvider"])


def check_onnx(
    path: str | Path,
    detector: nn.Module,
    pixel_values: torch.Tensor,
    query_embeds: torch.Tensor,
    baked: bool,
    rescore: bool = True,
    runs: int = 3,
    threads: int | None = None,
    reference: torch.Tensor | None = None,
) -> dict:
    """Run the file with onnxruntime and the detector with torch on the same input.

    Returns `max_abs_diff` per output, and the median seconds per call of each (`ort_s`, `torch_s`).
    """
    session = onnx_session(path, threads)
    feeds = {"pixel_values": pixel_values.numpy()}
    if not baked:
        feeds["query_embeds"] = query_embeds.float().numpy()
    if reference is None:
        reference = reference_embeds(detector)
    module = ExportableDetector(detector.eval(), query_embeds if baked else None, rescore, reference)
    with torch.inference_mode():
        ref = module(pixel_values) if baked else module(pixel_values, query_embeds)
        torch_s = _median_seconds(lambda: module(pixel_values) if baked else module(pixel_values, query_embeds), runs)
    got = session.run(list(OUTPUT_NAMES), feeds)
    ort_s = _median_seconds(lambda: session.run(list(OUTPUT_NAMES), feeds), runs)
    diffs = {name: float(np.abs(g - r.numpy()).max()) for name, g, r in zip(OUTPUT_NAMES, got, ref)}
    return {"max_abs_diff": diffs, "ort_s": ort_s, "torch_s": torch_s}


def _median_seconds(fn, runs: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(max(1, runs)):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))
