"""The one scoring path: a query bank (texts with templates, image exemplars, reference names,
negatives) and an image batch -> the output contract with `logits` [B, P, Q].

`Detector.predict`, the ONNX wrapper and the demo all call `score`, so the exported file, the
CLI and the browser can never score differently.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ovdet.models.negative_queries import negative_veto
from ovdet.text.templates import resolve_templates

TEMPLATE_MODES = ("embed", "logit")


@dataclass
class QueryBank:
    """Embedded queries, ready to score.

    positives: [Q + X, E] texts then exemplars; [T, Q + X, E] with template_mode "logit".
    negatives: [N, E] (or [T, N, E]) texts that only veto detections, or None.
    reference: [R, E] names that compete in the crop re-scorer's softmax, never reported, or None.
    negative_reference: the same for the joint (positives + negatives) softmax, or None.
    """

    positives: torch.Tensor
    negatives: torch.Tensor | None = None
    reference: torch.Tensor | None = None
    negative_reference: torch.Tensor | None = None

    @property
    def per_template(self) -> bool:
        return self.positives.dim() == 3


def build_query_bank(
    detector,
    queries: list[str],
    templates=None,
    template_mode: str = "embed",
    exemplar_embeds: torch.Tensor | None = None,
    negatives: list[str] | None = None,
) -> QueryBank:
    """Embed texts (cached), append exemplar embeddings [X, E] and add what crop re-scoring needs.

    With crop re-scoring on, crops are compared with template-averaged embeddings whatever the
    mode (CLIP's own zero-shot recipe); else "logit" keeps one embedding per template (OWL-ViT).
    """
    if template_mode not in TEMPLATE_MODES:
        raise ValueError(f"template_mode must be one of {TEMPLATE_MODES}, got {template_mode!r}")
    reduce = template_mode == "embed" or detector.rescorer is not None
    templates = detector.prompt_templates(templates)
    queries, negatives = list(queries), list(negatives or [])
    parts = [detector.encode_queries(queries, templates, reduce=reduce)] if queries else []
    if exemplar_embeds is not None and len(exemplar_embeds):
        extra = exemplar_embeds.to(detector.device, torch.float32)  # [X, E]: one embedding for every template
        parts.append(extra if reduce else extra.expand(len(resolve_templates(templates)), -1, -1))
    if not parts:
        raise ValueError("no queries: give at least one text query or image exemplar")
    bank = QueryBank(torch.cat(parts, dim=-2))
    if negatives:
        bank.negatives = detector.encode_queries(negatives, templates, reduce=reduce)
    if detector.rescorer is not None:
        bank.reference = _reference(detector, templates)
        if negatives:
            bank.negative_reference = bank.reference  # all reference names either way (see _reference)
    return bank


def _reference(detector, templates) -> torch.Tensor | None:
    """The re-scorer's reference names embedded, [R, E], or None. All of them, asked or not: an asked one is
    dropped from the softmax by its embedding (as in an exported file) and marks that query as a base name."""
    names = detector.rescorer.reference
    return detector.encode_queries(names, templates) if names else None


def score(detector, pixel_values: torch.Tensor, bank: QueryBank, rescore: bool = True) -> dict[str, torch.Tensor]:
    """Forward and score: the output contract, plus `negative_veto` [B, P, Q + X] when the bank has negatives.
    `rescore` False scores with the head alone even where the detector has a crop re-scorer. A detector handed to
    another runtime (`Detector.set_runtime`) is scored there, by its export of this very function."""
    engine = detector.__dict__.get("_engine")
    if engine is not None and (rescore or detector.rescorer is None):
        return engine.score(pixel_values, bank)
    if detector.rescorer is not None and rescore:
        return _score_rescored(detector, pixel_values, bank)
    positives, num_positive = bank.positives, bank.positives.shape[-2]
    queries = positives if bank.negatives is None else torch.cat([positives, bank.negatives], dim=-2)
    if bank.per_template:
        t, q, e = queries.shape
        out = detector(pixel_values, queries.reshape(t * q, e))
        b, p, _ = out["logits"].shape
        out["logits"] = out["logits"].view(b, p, t, q).mean(2)  # [B, P, Q]: OWL-ViT's template ensembling
    else:
        out = detector(pixel_values, queries)
    if bank.negatives is not None:
        out["negative_veto"] = negative_veto(out["logits"], num_positive)  # [B, P, Q + X]
        out["logits"] = out["logits"][..., :num_positive]
    return out


def _score_rescored(detector, pixel_values: torch.Tensor, bank: QueryBank) -> dict[str, torch.Tensor]:
    """Head proposes, CLIP classifies (its crops, or the boxes pooled from this pass); negatives never change a
    kept score, they only veto."""
    rescorer, backbone = detector.rescorer, detector.backbone
    out = detector(pixel_values, bank.positives, keep_region_map=True)
    region_map = out.pop("region_map")  # [B, C, h, w] or None: what a RegionPoolScorer pools
    out["logits"] = rescorer(backbone, pixel_values, out, bank.positives, bank.reference, region_map)
    if bank.negatives is not None:
        joint = torch.cat([bank.positives, bank.negatives])  # [Q + X + N, E]
        joint_logits = rescorer(backbone, pixel_values, out, joint, bank.negative_reference, region_map)  # [B, P, Q + X + N]
        out["negative_veto"] = negative_veto(joint_logits, bank.positives.shape[0])  # a symbolic size in export
    return out
