"""A runtime engine: runs a detector's exported graph (`runtime_graph`) and returns what `score` returns.

Pre-processing, text and exemplar embedding, and post-processing stay ovdet's own (torch); only the network
runs in the runtime. Graphs are built on first use per variant and cached on disk (`graph_cache`).
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from ovdet.errors import OvdetError
from ovdet.models.negative_queries import negative_veto
from ovdet.runtime.graph_cache import build_once, graph_folder
from ovdet.runtime.runtime_graph import VARIANTS, export_graph

ONNX_NAME = "model.onnx"
CALIBRATION_NAMES = ("object", "person", "car", "dog", "circle", "square", "star", "triangle")


class RuntimeEngine:
    """Base: graph caching and the scoring contract; subclasses load a graph folder and run feeds.

    Args:
        detector: the Detector (kept in fp32 on the torch side: it exports, embeds texts and exemplars).
        precision: what the runtime runs: "fp32", "bf16" or "int8" (see `runtime_precision`).
        calibration: PIL images int8 ranges are taken from (None: ovdet's default calibration scenes).
    """

    name = ""
    precisions: tuple[str, ...] = ("fp32",)

    def __init__(self, detector, precision: str, calibration: list | None = None):
        self.detector, self.precision, self.calibration = detector, precision, calibration
        self._graphs: dict[str, object] = {}

    # ---- subclasses --------------------------------------------------------------------------
    def build(self, folder, variant: str) -> None:  # pragma: no cover - interface
        """Write the runnable graph of `variant` into the empty `folder`."""
        raise NotImplementedError

    def load(self, folder, variant: str):  # pragma: no cover - interface
        """A callable feeds -> list of numpy outputs, from a folder `build` wrote."""
        raise NotImplementedError

    # ---- shared ------------------------------------------------------------------------------
    def graph(self, variant: str):
        if variant not in self._graphs:
            extra = {"code": _code_version(type(self))}
            if self.precision == "int8":
                extra["calibration"] = self._calibration_key()
            folder = graph_folder(self.detector, self.name, self.precision, variant, extra)
            build_once(folder, lambda tmp: self.build(tmp, variant))
            self._graphs[variant] = self.load(folder, variant)
        return self._graphs[variant]

    def export_fp32(self, path, variant: str):
        """ovdet's ONNX graph of `variant`, exported from the torch detector in fp32 once and shared by every
        runtime and precision (copied to `path`)."""
        import shutil

        def export(folder):
            with torch_path(self.detector):
                export_graph(self.detector, variant, folder / ONNX_NAME)

        folder = graph_folder(self.detector, "onnx", "fp32", variant, {"code": _code_version(RuntimeEngine)})
        source = build_once(folder, export)
        shutil.copyfile(source / ONNX_NAME, path)
        return path

    def run(self, variant: str, *inputs: torch.Tensor) -> list[torch.Tensor]:
        names = VARIANTS[variant][0]
        feeds = {n: t.detach().float().cpu().numpy() for n, t in zip(names, inputs)}
        outputs = self.graph(variant)(feeds)
        return [torch.from_numpy(np.asarray(o)).to(self.detector.device) for o in outputs]

    def score(self, pixel_values: torch.Tensor, bank) -> dict[str, torch.Tensor]:
        """What `ovdet.models.scoring.score` returns, computed by the runtime."""
        positives, negatives, q = bank.positives, bank.negatives, bank.positives.shape[-2]
        if bank.per_template:  # a head without re-scoring: logits are per query row, mean over templates after
            t, _, e = positives.shape
            rows = positives if negatives is None else torch.cat([positives, negatives], dim=-2)  # [T, Q + N, E]
            boxes, logits, objectness = self.run("embeds", pixel_values, rows.reshape(-1, e))
            b, p, _ = logits.shape
            logits = logits.view(b, p, t, rows.shape[1]).mean(2)
            out = {"pred_boxes": boxes, "logits": logits, "objectness": objectness}
            if negatives is not None:
                out["negative_veto"] = negative_veto(logits, q)
                out["logits"] = logits[..., :q]
            return out
        if negatives is None:
            boxes, logits, objectness = self.run("embeds", pixel_values, positives)
            return {"pred_boxes": boxes, "logits": logits, "objectness": objectness}
        boxes, logits, objectness, veto = self.run("embeds_neg", pixel_values, positives, negatives)
        return {"pred_boxes": boxes, "logits": logits, "objectness": objectness, "negative_veto": veto.bool()}

    # ---- int8 calibration --------------------------------------------------------------------
    def calibration_feeds(self, variant: str, limit: int | None = None) -> list[dict[str, np.ndarray]]:
        """Inputs int8 ranges are observed on: calibration images at the detector's input size, two at a time,
        with the query embeddings of a few common names."""
        from ovdet.towers.resnet_int8 import default_calibration_images

        images = self.calibration if self.calibration is not None else default_calibration_images()
        images = list(images)[:limit] if limit else list(images)
        with torch_path(self.detector), torch.inference_mode():
            queries = self.detector.encode_queries(list(CALIBRATION_NAMES)).float().cpu().numpy()
            feeds = []
            for start in range(0, len(images), 2):
                pixels = self.detector.preprocessor.to_model(images[start:start + 2]).float().numpy()
                feed = {"pixel_values": pixels, "query_embeds": queries}
                if variant == "embeds_neg":
                    feed["negative_embeds"] = queries[:2]
                feeds.append(feed)
        return feeds

    def _calibration_key(self) -> str:
        if self.calibration is None:
            return "default"
        import hashlib

        digest = hashlib.sha256()
        for image in self.calibration:
            digest.update(np.asarray(image.convert("RGB")).tobytes())
        return digest.hexdigest()


def _code_version(engine_cls) -> str:
    """A hash of the code a cached graph comes from (the engine's module, the graph, the scoring path), so a changed
    export or quantisation recipe never reads a graph the old one built."""
    import hashlib
    import inspect
    import sys

    from ovdet.models import scoring
    from ovdet.runtime import runtime_graph

    digest = hashlib.sha256()
    for module in (sys.modules[engine_cls.__module__], runtime_graph, scoring):
        digest.update(inspect.getsource(module).encode())
    return digest.hexdigest()[:16]


@contextlib.contextmanager
def torch_path(detector):
    """The detector's own torch path for the duration (its runtime engine set aside): export and calibration
    trace the torch network, never the runtime that runs it."""
    engine = detector.__dict__.pop("_engine", None)
    try:
        yield detector
    finally:
        if engine is not None:
            detector.__dict__["_engine"] = engine


def check_precision(engine_cls, precision: str) -> str:
    if precision not in engine_cls.precisions:
        raise OvdetError(f"--runtime {engine_cls.name} runs {' or '.join(engine_cls.precisions)}, not {precision}; "
                         f"pass --precision {engine_cls.precisions[0]} or use another runtime")
    return precision
