"""What the index stores per image: the regions a detector would score, with everything their score needs.

`ovdet detect`'s score of a region for a query is a function of the region alone and the query's embedding:
- with region scoring (the embedded model) or crop re-scoring, only the top-K regions by objectness are scored,
  from the re-scorer's own embedding of each box (`rescorer.region_embeddings`: pooled from the pass's region
  map, or the crop's CLIP embedding) and the objectness logit, and, where the model has F-VLM's trained region
  classifier, that classifier's embedding of each box too;
- with the head alone, every region is scored as `logit = scale * cos(region, query) + bias`, where the head's
  per-region scale and shift are read off its output for probe queries (a zero query gives `bias`, unit
  queries give `scale`), so no head internals are reached into.
So the index keeps exactly those embeddings, and `ovdet search` scores them as `detect` would.
"""

from __future__ import annotations

import hashlib
import json

import torch
import torch.nn.functional as F

from ovdet.box_ops import box_convert

DEFAULT_REGIONS = 32  # regions per image when the model has no re-scorer of its own top-K


def scoring_kind(detector) -> str:
    """"region_pool", "crops" or "head": which embeddings `ovdet detect` scores with this detector."""
    if detector.rescorer is None:
        return "head"
    return "crops" if detector.rescore else "region_pool"


def default_regions(detector) -> int:
    """Regions per image a detector's scores come from: its re-scorer's top-K, else DEFAULT_REGIONS."""
    return detector.rescorer.topk if detector.rescorer is not None else DEFAULT_REGIONS


def model_fingerprint(detector) -> str:
    """sha256 of the detector's weights (sampled, as the text cache samples them) and its settings."""
    from ovdet.models.text_encoder import tower_fingerprint

    digest = hashlib.sha256(tower_fingerprint(detector).encode())
    digest.update(json.dumps(detector.settings.asdict(), sort_keys=True, default=str).encode())
    return digest.hexdigest()


@torch.inference_mode()
def encode_regions(detector, pixel_values: torch.Tensor, regions: int) -> dict[str, torch.Tensor]:
    """The top `regions` regions of each image by objectness, ready to be scored without the image.

    Args:
        pixel_values: [B, 3, S, S] preprocessed images.
    Returns:
        `boxes` [B, K, 4] xyxy 0..1 of the model input, `objectness` [B, K] logits, `embeds` [B, K, E]
        L2-normalised, `logit_scale` / `logit_bias` [B, K] (head scoring; 1 and 0 otherwise), `reference_lse`
        [B, K] (re-scoring: `reference_logsumexp`; 0 otherwise); with a trained region classifier also
        `classifier_embeds` [B, K, E] and `classifier_reference_lse` [B, K], its own naming of the same regions.
    """
    pixels = pixel_values.to(detector.device)
    e = detector.text_encoder.embed_dim
    probes = torch.cat([torch.zeros(1, e), torch.eye(e)]).to(detector.device)  # [1 + E, E]: zero, then unit queries
    out = detector(pixels, probes, keep_region_map=True)
    region_map = out.pop("region_map")  # [B, C, h, w] or None
    k = min(regions, out["objectness"].shape[1])
    top = out["objectness"].float().topk(k, dim=1).indices  # [B, K]

    def pick(t: torch.Tensor) -> torch.Tensor:  # [B, P, ...] -> [B, K, ...]
        return torch.gather(t, 1, top.view(*top.shape, *[1] * (t.dim() - 2)).expand(-1, -1, *t.shape[2:]))

    boxes = pick(out["pred_boxes"].float())  # [B, K, 4] cxcywh
    logits = pick(out["logits"].float())  # [B, K, 1 + E]
    reference_lse = torch.zeros_like(logits[..., 0])  # [B, K]
    extra = {}
    if detector.rescorer is not None:
        embeds, classified = detector.rescorer.region_outputs(detector.backbone, pixels, boxes, region_map)  # [B*K, E]
        embeds = embeds.float().view(*boxes.shape[:2], -1)  # [B, K, E]
        scale, bias = torch.ones_like(logits[..., 0]), torch.zeros_like(logits[..., 0])
        reference_lse = reference_logsumexp(detector, embeds)
        if classified is not None:  # F-VLM's trained classifier names the regions too: its terms are stored beside
            classified = classified.float().view(*boxes.shape[:2], -1)  # [B, K, E]
            extra = {"classifier_embeds": classified, "classifier_reference_lse": reference_logsumexp(detector, classified)}
    else:
        embeds = pick(out["region_embeds"].float())  # [B, K, E]
        bias = logits[..., 0]  # [B, K]: shift * scale, the logit of a zero query
        # logit_i - bias = scale * embed_i for unit query i: its norm is the multiplier of cos(unit embed, query)
        scale = (logits[..., 1:] - bias[..., None]).norm(dim=-1)  # [B, K]
        embeds = F.normalize(embeds, dim=-1)
    return {"boxes": box_convert(boxes, "cxcywh", "xyxy"), "objectness": pick(out["objectness"].float()),
            "embeds": embeds.float(), "logit_scale": scale, "logit_bias": bias, "reference_lse": reference_lse, **extra}


def reference_logsumexp(detector, embeds: torch.Tensor) -> torch.Tensor:
    """[..., K] logsumexp over the re-scorer's reference names of CLIP's logits for embeds [..., K, E] (with the
    model's own templates): the query-independent part of the softmax, so a search multiplies by its queries only.
    -inf when the model has no reference names."""
    names = detector.rescorer.reference
    if not names:
        return torch.full(embeds.shape[:-1], float("-inf"), device=embeds.device)
    reference = detector.encode_queries(names).float()  # [R, E]
    return (detector.rescorer.logit_scale * embeds @ reference.T).logsumexp(-1)  # [..., K]
