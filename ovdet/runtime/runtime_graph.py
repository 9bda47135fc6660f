"""The network a runtime runs: ovdet's own scoring path (`ovdet.models.scoring.score`) as a tensor -> tuple graph,
with the query embeddings as inputs, so any vocabulary, exemplar or negative works without a new export.

Two variants:
- "embeds": (pixel_values [B, 3, S, S], query_embeds [Q, E]) -> pred_boxes [B, P, 4], logits [B, P, Q],
  objectness [B, P]. A head's logits are per query, so negatives and per-template queries are simply more rows
  of query_embeds (the engine splits them again, as `score` does).
- "embeds_neg": adds the input negative_embeds [N, E] and the output negative_veto [B, P, Q] (bool), as `score`
  computes it (a re-scoring detector's logits share one softmax over the queries, so negatives cannot simply be
  more rows there).
The re-scorer's reference names are embedded once and baked in, as `ovdet export` bakes them.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

VARIANTS = {"embeds": (("pixel_values", "query_embeds"), ("pred_boxes", "logits", "objectness")),
            "embeds_neg": (("pixel_values", "query_embeds", "negative_embeds"),
                           ("pred_boxes", "logits", "objectness", "negative_veto"))}


class RuntimeGraph(nn.Module):
    """`score` of a detector with its reference names baked in (see the module docstring for the variants)."""

    def __init__(self, detector: nn.Module, reference: torch.Tensor | None):
        super().__init__()
        self.detector = detector
        self.register_buffer("reference", None if reference is None else reference.detach().float().clone())

    def forward(self, pixel_values: torch.Tensor, query_embeds: torch.Tensor,
                negative_embeds: torch.Tensor | None = None):
        from ovdet.models.scoring import QueryBank, score

        bank = QueryBank(query_embeds, reference=self.reference)
        if negative_embeds is not None:
            bank.negatives = negative_embeds
            bank.negative_reference = self.reference
        out = score(self.detector, pixel_values, bank)
        if negative_embeds is None:
            return out["pred_boxes"], out["logits"], out["objectness"]
        return out["pred_boxes"], out["logits"], out["objectness"], out["negative_veto"]


def export_graph(detector: nn.Module, variant: str, path: Path, opset: int = 18) -> Path:
    """Write the fp32 ONNX graph of `variant` to `path` (dynamic batch and query counts)."""
    from ovdet.box_ops import ensure_torchvision
    from ovdet.export.onnx import _quiet_exporter, reference_embeds

    inputs, outputs = VARIANTS[variant]
    detector = detector.eval()
    size, dim = detector.image_size, detector.text_encoder.embed_dim
    module = RuntimeGraph(detector, reference_embeds(detector))
    args = (torch.zeros(2, 3, size, size), torch.randn(3, dim))  # 2 and 3: a 1 would be specialised
    shapes = {"pixel_values": {0: torch.export.Dim("batch", min=1, max=1024)},
              "query_embeds": {0: torch.export.Dim("queries", min=1, max=100_000)}}
    if variant == "embeds_neg":
        args += (torch.randn(2, dim),)
        shapes["negative_embeds"] = {0: torch.export.Dim("negatives", min=1, max=100_000)}
    ensure_torchvision()  # torchvision's fake kernels, which tracing its roi_align needs
    with warnings.catch_warnings(), torch.no_grad(), _quiet_exporter():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, str(path), dynamo=True, opset_version=opset, input_names=list(inputs),
                          output_names=list(outputs), dynamic_shapes=shapes, external_data=False, verbose=False)
    return path
