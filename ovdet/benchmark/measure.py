"""One benchmark configuration, measured in its own process: `python -m ovdet.benchmark.measure SPEC_JSON`.

A fresh process per configuration keeps peak RSS (`ru_maxrss`) and allocator state from mixing
between configurations. The result is one JSON line on stdout.
"""

from __future__ import annotations

import contextlib
import json
import resource
import sys
import time

import numpy as np
import torch

from ovdet.benchmark.workload import synthetic_images, synthetic_names


def _sync() -> None:
    """Wait for queued GPU work, so a timing covers it (a no-op on a CPU)."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()


# Pause before each paired call: torch's OpenMP and OpenVINO's TBB threads spin for a while after a call, and on a
# 2-core machine they slowed the next side by up to a third (torch fp32 measured 1.32x its identical reference).
SETTLE_S = 0.3


def call_seconds(step) -> float:
    """Seconds of one `step()`, queued GPU work included."""
    start = time.perf_counter()
    step()
    _sync()
    return time.perf_counter() - start


def timed_runs(step, runs: int, warmup: int, slow_call_s: float, slow_runs: int, before=None) -> dict:
    """Median seconds of `step()` over `runs` calls after `warmup` calls.

    A first call slower than `slow_call_s` means a slow configuration: it is measured with
    `slow_runs` calls instead, and when even one more call would exceed 2 x `slow_call_s`
    the first call is the measurement (its warm-up overhead is small next to the call).
    `before()` runs untimed before every call (e.g. clearing the text cache).
    """
    times = []
    for i in range(max(warmup, 1)):
        if before:
            before()
        took = call_seconds(step)
        if i == 0 and took > slow_call_s:
            runs = slow_runs
            if took > 2 * slow_call_s:
                times.append(took)
                runs = max(0, slow_runs - 1)
            break
    for _ in range(runs):
        if before:
            before()
        times.append(call_seconds(step))
    return {"median_s": float(np.median(times)), "runs": len(times), "times_s": [round(t, 4) for t in times]}


def measure_owlvit(spec: dict) -> dict:
    """transformers' OwlViT (or OWLv2) as its API is used: processor(text, images) then model(**inputs), every call."""
    return {"full": timed_runs(reference_step(spec), **_timing(spec))}


def reference_step(spec: dict):
    """One call of transformers' OwlViT (or OWLv2 for the owlv2 model), text re-encoded each time."""
    if spec["model"] == "owlv2":
        return owlv2_reference_step(spec)
    from transformers import OwlViTForObjectDetection

    device = spec.get("device", "cpu")
    model = OwlViTForObjectDetection.from_pretrained(spec["owlvit_dir"], attn_implementation="sdpa").eval().to(device)
    processor = owlvit_processor(spec)
    images, names = synthetic_images(spec["batch"]), synthetic_names(spec["queries"])

    @torch.inference_mode()
    def step():
        inputs = processor(text=[names] * len(images), images=images, return_tensors="pt").to(device)
        return model(**inputs)

    return step


def owlvit_processor(spec: dict):
    """OwlViT's processor at the benchmark's image size, with CLIP's tokenizer padded to OWL's 16 tokens."""
    from transformers import OwlViTImageProcessor, OwlViTProcessor

    from ovdet.text.tokenizer import clip_tokenizer

    size = spec["image_size"]
    tokenizer = clip_tokenizer()  # its own copy
    tokenizer.model_max_length = 16  # OWL-ViT's text context
    return OwlViTProcessor(
        image_processor=OwlViTImageProcessor(size={"height": size, "width": size}, crop_size={"height": size, "width": size}),
        tokenizer=tokenizer,
    )  # fmt: skip


def owlv2_reference_step(spec: dict):
    """transformers' Owlv2ForObjectDetection on the benchmark's folder, with its own processor."""
    from transformers import Owlv2ForObjectDetection, Owlv2Processor

    device = spec.get("device", "cpu")
    model = Owlv2ForObjectDetection.from_pretrained(spec["owl_dir"], attn_implementation="sdpa").eval().to(device)
    processor = Owlv2Processor.from_pretrained(spec["owl_dir"])
    images, names = synthetic_images(spec["batch"]), synthetic_names(spec["queries"])

    @torch.inference_mode()
    def step():
        return model(**processor(text=[names] * len(images), images=images, return_tensors="pt").to(device))

    return step


def owl_agreement(detector, spec: dict) -> dict:
    """ovdet vs transformers on the same OWL folder, photo and queries: max abs difference of every output."""
    from ovdet.benchmark.peers import owl_model_and_processor

    model, processor = owl_model_and_processor(spec)
    image, names = synthetic_images(1), synthetic_names(5)
    model.to(detector.device)
    with torch.inference_mode():
        ref = model(**processor(text=[names], images=image, return_tensors="pt").to(detector.device))
        out = detector.predict(detector.preprocessor.to_model(image), names)
    pairs = {"pred_boxes": (out["pred_boxes"], ref.pred_boxes), "logits": (out["logits"], ref.logits)}
    if spec["model"] == "owlv2":
        pairs["objectness"] = (out["objectness"], ref.objectness_logits)
    diffs = {k: float((a - b).abs().max()) for k, (a, b) in pairs.items()}
    # the scale the differences are rounding of (random weights give objectness logits in the thousands)
    return {**diffs, "largest": {k: float(b.abs().max()) for k, (a, b) in pairs.items()}}


def ovdet_detector(spec: dict, precision: str, runtime: str = "torch", identical: bool = False):
    """The spec's model as an ovdet Detector in `precision` on `runtime`; returns (detector, resolved precision).
    `identical`: load the very OWL folder transformers loads (same weights, same head), not a new head on its CLIP."""
    from ovdet.benchmark.models import EMBEDDED_VARIANTS, embedded_scoring
    from ovdet.models.detector import Detector

    if spec["model"] in EMBEDDED_VARIANTS:
        detector = Detector.from_pretrained(spec["model_dir"])
        embedded_scoring(detector, spec["model"])
    elif spec["model"] == "owlv2":
        detector = Detector.from_pretrained(spec["owl_dir"])  # the very folder transformers loads
    elif identical:
        detector = Detector.from_pretrained(spec["owlvit_dir"])
    else:
        detector = Detector.from_clip(spec["clip_dir"], image_size=spec["image_size"])
    detector.eval().to(spec.get("device", "cpu"))
    resolved = detector.set_precision(precision)
    if runtime != "torch":
        detector.set_runtime(runtime, precision)
        resolved = detector.runtime_precision
    return detector, resolved


def ovdet_step(detector, spec: dict, images: list):
    """ovdet's `predict` on `images` and the spec's names, preprocessing included."""
    names = synthetic_names(spec["queries"])

    @torch.inference_mode()
    def step():
        return detector.predict(detector.preprocessor(images), names)

    return step


def measure_ovdet(spec: dict) -> dict:
    """ovdet's `predict` (preprocess + forward) with the text cache cleared each call (cold) and warm (cached)."""
    detector, precision = ovdet_detector(spec, spec["precision"])
    images = synthetic_images(spec["batch"])
    step = ovdet_step(detector, spec, images)
    result = {"precision": precision}
    if spec["model"] == "owlv2" and precision == "fp32":
        result["agreement"] = owl_agreement(detector, spec)  # same run, identical weights
    if spec.get("compile"):  # freezing: weights become constants the compiler can prepack (frozen tower)
        detector.set_compile(True, dynamic=False, options={"freezing": True})
        start = time.perf_counter()
        step()  # compilation happens here, outside every timing
        result["compile_s"] = time.perf_counter() - start
    if spec.get("cold", True):
        result["cold"] = timed_runs(step, **_timing(spec), before=detector.text_encoder.clear_cache)
    result["cached"] = timed_runs(step, **_timing(spec))
    if spec.get("backbone", True):
        result["backbone"] = measure_backbone(detector, detector.preprocessor(images), spec)
    return result


def _linear_pointwise_flops(x_shape, w_shape, *args, out_shape=None, **kwargs) -> int:
    """oneDNN's prepacked Linear (ovdet.towers.cpu_linear): weight [N, K], x [..., K]."""
    rows = 1
    for n in x_shape[:-1]:
        rows *= n
    return 2 * rows * w_shape[0] * w_shape[1]


def _cpu_flash_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    from torch.utils.flop_counter import sdpa_flop_count

    return sdpa_flop_count(query_shape, key_shape, value_shape)


# Ops torch's FlopCounterMode has no formula for: without them fp32 SDPA on a CPU counted 0 FLOPs
# (OWLv2 fp32: 616 of 1094 GFLOP) and so did every prepacked Linear.
def _uncounted_flops() -> dict:
    from ovdet.towers.cpu_linear import packing_available

    mapping = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_flash_flops}
    if packing_available():  # a torch without oneDNN has no such op to name
        mapping[torch.ops.mkldnn._linear_pointwise] = _linear_pointwise_flops
    return mapping


def measure_backbone(detector, pixel_values: torch.Tensor, spec: dict) -> dict:
    """Seconds and counted FLOPs (matmuls, convolutions, attention) of the vision backbone alone."""
    from torch.utils.flop_counter import FlopCounterMode

    autocast = (
        torch.autocast(detector.device.type, dtype=torch.bfloat16) if detector.precision == "bf16"
        else contextlib.nullcontext()
    )
    pixel_values = pixel_values.to(detector.device)

    @torch.inference_mode()
    def step():
        with autocast:
            return detector.backbone(pixel_values)

    counter = FlopCounterMode(display=False, custom_mapping=_uncounted_flops())
    with counter:
        step()
    timing = timed_runs(step, **_timing(spec))
    flops = counter.get_total_flops()
    return {**timing, "flops": flops, "flops_per_s": flops / timing["median_s"]}


def measure_paired(spec: dict) -> dict:
    """The reference, its peers (`spec["peers"]`, see `ovdet.benchmark.peers`) and ovdet (each of
    `spec["precisions"]` on each of `spec["runtimes"]`, through `Detector.detect`: pre- and post-processing
    included, text cached) in one process, called in turn for `spec["rounds"]` rounds: the VM's minute-to-minute
    speed swings (up to 40 % here) hit every side of a round alike, so the per-round ratios are steadier than
    ratios of medians taken minutes apart. Every side's outputs are compared with transformers' in the same run
    (`agreement`: largest difference relative to the reference's largest value; ovdet's: absolute, with scale)."""
    from ovdet.benchmark.peers import peer_step

    from ovdet.benchmark.models import EMBEDDED_VARIANTS

    images, names = synthetic_images(spec["batch"]), synthetic_names(spec["queries"])
    own = spec["model"] in EMBEDDED_VARIANTS  # no transformers twin: the reference is ovdet's torch fp32 path
    if own:
        reference, _ = ovdet_detector(spec, "fp32")
        steps = {"reference": detect_step(reference, images, names)}
    else:
        steps = {"reference": reference_step(spec)}
    agreement: dict[str, dict] = {}
    for peer in spec.get("peers", []):
        try:
            steps[peer], agreement[peer] = peer_step(spec, peer, images, names)
        except Exception as err:  # a peer that cannot convert this model is reported, not fatal
            agreement[peer] = {"error": f"{type(err).__name__}: {str(err).splitlines()[0][:300] if str(err) else ''}"}
    for runtime in spec.get("runtimes", ["torch"]):
        for precision in spec["precisions"]:
            try:
                detector, resolved = ovdet_detector(spec, precision, runtime, identical=True)
            except ValueError as err:  # a precision this runtime does not run (onnxruntime has no bf16)
                agreement[f"{precision}/{runtime}"] = {"skipped": str(err)}
                continue
            name = resolved if runtime == "torch" else f"{resolved}/{runtime}"
            if name in steps:
                continue
            steps[name] = detect_step(detector, images, names)
            agreement[name] = output_agreement(detector, reference, names) if own else owl_agreement(detector, spec)
    for step in steps.values():
        for _ in range(max(spec["warmup"], 1)):  # caches, oneDNN primitives, the text cache, compiled graphs
            step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(spec["rounds"]):
        for name, step in steps.items():
            time.sleep(SETTLE_S)  # the threads the previous side left spinning go idle first
            times[name].append(round(call_seconds(step), 4))
    ratios = {name: [r / t for r, t in zip(times["reference"], ts)] for name, ts in times.items() if name != "reference"}
    return {"paired": {"rounds": spec["rounds"], "times_s": times, "agreement": agreement,
                       "speedup": {n: {"median": float(np.median(r)), "min": min(r), "max": max(r)} for n, r in ratios.items()}}}


def output_agreement(detector, reference, names: list[str]) -> dict:
    """Largest difference of every output between two ovdet detectors on one image, with the reference's scale."""
    pixels = reference.preprocessor.to_model(synthetic_images(1))
    with torch.inference_mode():
        got, ref = detector.predict(pixels, names), reference.predict(pixels, names)
    keys = ("pred_boxes", "logits", "objectness")
    return {**{k: float((got[k] - ref[k]).abs().max()) for k in keys},
            "largest": {k: float(ref[k].abs().max()) for k in keys}}


def detect_step(detector, images: list, names: list[str]):
    """`Detector.detect` on PIL images: ovdet's whole path, pre- and post-processing included."""

    @torch.inference_mode()
    def step():
        return detector.detect(images, names, threshold=0.1)

    return step


def measure_onnx(spec: dict) -> dict:
    """onnxruntime on the exported embeddings-input file, query embeddings cached; ovdet's preprocessor."""
    from ovdet.export.onnx import onnx_session
    from ovdet.preprocess import ImagePreprocessor

    session = onnx_session(spec["onnx_paths"][str(spec["batch"])], spec.get("threads"))
    pre = ImagePreprocessor(spec["image_size"], tuple(spec["image_mean"]), tuple(spec["image_std"]))
    images = synthetic_images(spec["batch"])
    queries = torch.nn.functional.normalize(torch.randn(spec["queries"], spec["embed_dim"]), dim=-1)  # [Q, E]

    def step():
        return session.run(None, {"pixel_values": pre(images).numpy(), "query_embeds": queries.numpy()})

    return {"cached": timed_runs(step, **_timing(spec))}


def _timing(spec: dict) -> dict:
    return {k: spec[k] for k in ("runs", "warmup", "slow_call_s", "slow_runs")}


MEASURES = {"owlvit": measure_owlvit, "ovdet": measure_ovdet, "onnxruntime": measure_onnx, "paired": measure_paired}


def main(argv: list[str]) -> int:
    spec = json.loads(argv[0])
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    result = MEASURES[spec["impl"]](spec)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    result["threads"] = torch.get_num_threads()
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
