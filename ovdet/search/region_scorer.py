"""Score every stored region for the queries in one matrix product, on `ovdet detect`'s scale, and rank the hits.

The score of a (region, query) pair is the one `ovdet detect` gives with the same queries (before its
threshold and NMS):
- head scoring: sigmoid(logit_scale * cos(region, query) + logit_bias), the head's own logit;
- region / crop re-scoring (`CropRescorer`): objectness^(1 - w) * softmax_q(CLIP logits)^w, the softmax over
  the queries and the model's reference names, w the base or novel weight; the same formula as
  `CropRescorer.__call__`, applied to the stored embeddings (tests check both give the same numbers); with a
  trained region classifier, the probability is p_clip^(1 - s) * p_classifier^s as there.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ovdet.box_ops import batched_nms
from ovdet.models.crop_rescorer import DUPLICATE_COSINE
from ovdet.models.head import l2_normalize


@dataclass
class Hit:
    path: str
    box: list[float]  # xyxy, the image's pixels
    score: float
    query: str

    def to_dict(self) -> dict:
        return {"path": self.path, "box": self.box, "score": self.score, "query": self.query}


def score_regions(embeds: torch.Tensor, objectness: torch.Tensor, logit_scale: torch.Tensor,
                  logit_bias: torch.Tensor, queries: torch.Tensor, rescorer=None,
                  reference: torch.Tensor | None = None, reference_lse: torch.Tensor | None = None,
                  classifier_embeds: torch.Tensor | None = None,
                  classifier_reference_lse: torch.Tensor | None = None) -> torch.Tensor:
    """Scores [N, Q] in 0..1 of N stored regions for Q query embeddings.

    Args:
        embeds: [N, E] L2-normalised; objectness, logit_scale, logit_bias: [N].
        queries: [Q, E] (texts then exemplars), as `build_query_bank` makes them.
        rescorer: the detector's `CropRescorer` / `RegionPoolScorer`, or None (head scoring).
        reference: [R, E] the re-scorer's reference names, or None.
        reference_lse: [N] the regions' logsumexp over the reference names, stored at index time with the same
            embeddings (`region_encoder.reference_logsumexp`), or None: then they are multiplied here. Unused
            when a query is itself a reference name (the softmax must not count it twice).
        classifier_embeds, classifier_reference_lse: [N, E], [N] the trained region classifier's naming of the
            same regions (F-VLM), or None; its probability joins CLIP's by the re-scorer's shares, as in
            `CropRescorer.__call__`.
    """
    queries, q = queries.float(), queries.shape[0]
    if rescorer is None:
        cos = l2_normalize(queries) @ embeds.T  # [Q, N]: the one matrix product
        return torch.sigmoid(logit_scale * cos + logit_bias).T  # [N, Q]
    weight = torch.full((q,), rescorer.novel_weight)  # [Q]
    is_reference = torch.zeros(q, dtype=torch.bool)  # [Q]
    rows, duplicate = queries, False
    if reference is not None and len(reference):
        reference = reference.float()  # [R, E]
        same = (reference @ queries.T) > DUPLICATE_COSINE  # [R, Q]: a reference name that is a query competes once
        rows, duplicate, is_reference = torch.cat([queries, reference[~same.any(-1)]]), bool(same.any()), same.any(0)
        weight = torch.where(is_reference, torch.tensor(rescorer.weight), weight)  # [Q]

    def log_probs(z: torch.Tensor, lse: torch.Tensor | None) -> torch.Tensor:  # z [N, E] -> [Q, N]
        if lse is not None and not duplicate:
            logits = rescorer.logit_scale * (queries @ z.T)  # [Q, N]: the one matrix product
            queries_lse = logits.logsumexp(0) if q > 1 else logits[0]  # [N]
            return logits - torch.logaddexp(queries_lse, lse)  # [Q, N]
        # [Q + R', N], not [N, Q + R']: the softmax then reduces across rows, each a contiguous run over the regions
        logits = rescorer.logit_scale * (rows @ z.T)  # the one matrix product
        return logits[:q] - logits.logsumexp(0)  # [Q, N]

    log_p = log_probs(embeds, reference_lse)  # [Q, N]
    if classifier_embeds is not None and getattr(rescorer, "classifier", None) is not None:
        share = torch.where(is_reference, rescorer.classifier_weight, rescorer.novel_classifier_weight)  # [Q]
        trained = log_probs(classifier_embeds.float(), classifier_reference_lse if reference_lse is not None else None)
        log_p = (1 - share)[:, None] * log_p + share[:, None] * trained  # p_clip^(1 - s) * p_classifier^s
    log_score = (1 - weight)[:, None] * F.logsigmoid(objectness)[None] + weight[:, None] * log_p  # [Q, N]
    return log_score.exp().clamp(1e-6, 1 - 1e-6).T  # [N, Q]: objectness^(1 - w) * probs^w


def rank_hits(scores: torch.Tensor, boxes: torch.Tensor, image_rows: torch.Tensor, top: int,
              nms: float | None = 0.5, threshold: float = 0.0) -> list[tuple[int, int, float]]:
    """The best `top` (region, query) pairs, best first, after per-image, per-query NMS as `ovdet detect` does.

    Args:
        scores: [N, Q]; boxes: [N, 4] xyxy pixels; image_rows: [N] the image of each region.
        nms: IoU above which the lower-scored of two same-image, same-query boxes is dropped; None: no NMS.
    Returns:
        (region row, query index, score) triples.
    """
    q = scores.shape[1]
    flat = scores.flatten()  # [N*Q]
    candidates = min(flat.numel(), max(4 * top, 256))
    while True:
        # NMS over the best `candidates` pairs equals NMS over all of them for every pair it keeps: a box is only
        # ever dropped by a better one, which is among the candidates too. Widen until `top` survive.
        best = flat.topk(candidates).indices  # [C]
        best = best[flat[best] >= threshold]
        rows, labels = best // q, best % q
        if nms is not None and len(best):
            kept = best[batched_nms(boxes[rows], flat[best], image_rows[rows] * q + labels, nms)]
        else:
            kept = best
        if len(kept) >= top or candidates == flat.numel() or len(best) < candidates:
            break
        candidates = min(flat.numel(), candidates * 4)
    kept = kept[:top]
    return [(int(i) // q, int(i) % q, float(flat[i])) for i in kept]


def to_hits(index, ranked: list[tuple[int, int, float]], labels: list[str]) -> list[Hit]:
    """(row, query, score) triples of a `RegionIndex` -> Hits with the image path and rounded box."""
    from ovdet.models.detection import BOX_DECIMALS, SCORE_DECIMALS

    rows = index.image_rows()
    boxes = index.arrays["boxes"]
    return [Hit(index.images[int(rows[r])]["path"], [round(float(v), BOX_DECIMALS) for v in boxes[r]],
                round(score, SCORE_DECIMALS), labels[qi]) for r, qi, score in ranked]  # fmt: skip


def as_tensors(index) -> dict[str, torch.Tensor]:
    """A `RegionIndex`'s rows as torch tensors (no copy)."""
    return {"embeds": torch.from_numpy(np.ascontiguousarray(index.embeds)),
            **{k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in index.arrays.items()},
            "image_rows": torch.from_numpy(index.image_rows())}  # fmt: skip
