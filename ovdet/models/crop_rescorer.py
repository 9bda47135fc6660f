"""Re-score the head's best regions by encoding their crops with the CLIP image tower (ViLD / F-VLM style).

A CLIP that classifies whole object crops well may give weak per-cell dense features (ShapeWorld's
small ResNet CLIP: 95 % zero-shot on crops, under 20 % from a feature-map cell). Cropping each
candidate box out of the input, resizing it to CLIP's own resolution and encoding it carries
CLIP's crop-level knowledge, novel classes included, to detection. The head still proposes the
boxes (objectness, box regression); CLIP says what is in them.
"""

from __future__ import annotations

import torch

from ovdet.box_ops import box_convert, roi_align
from ovdet.boxes import square_context
from ovdet.models.head import MASKED_LOGIT

DUPLICATE_COSINE = 0.9999  # a reference embedding this close to a query's is that query


class CropRescorer:
    """Score = objectness^(1 - w) * softmax_q(CLIP crop logits)^w for the top-k regions per image.

    Args:
        topk: regions per image (by objectness) whose crops are encoded; the others get no score.
        weight: w, the share of the CLIP crop probability in the geometric mean, for the reference names
            (the names the head was trained on: F-VLM's base classes).
        context: fraction of the box size added on every side (CLIP saw objects with a margin).
        logit_scale: CLIP's learnt temperature for the softmax over queries.
        reference: names that always compete in the softmax without being reported (e.g. the
            training vocabulary). Without them a single query wins every crop with probability 1;
            with them, "star" alone must still beat "circle" on a circle's crop.
        novel_weight: w for every other query (F-VLM weighs CLIP more on novel names, whose objectness
            the head learnt less well); None: `weight` for all.
    """

    def __init__(
        self,
        topk: int = 32,
        weight: float = 0.5,
        context: float = 0.2,
        logit_scale: float = 100.0,
        reference: list[str] | None = None,
        novel_weight: float | None = None,
    ):
        novel_weight = weight if novel_weight is None else novel_weight
        if topk < 1 or not 0.0 <= weight <= 1.0 or not 0.0 <= novel_weight <= 1.0 or context < 0:
            raise ValueError(f"need topk >= 1, 0 <= weight, novel_weight <= 1, context >= 0; got {topk}, {weight}, "
                             f"{novel_weight}, {context}")
        self.topk, self.weight, self.context, self.logit_scale = topk, weight, context, logit_scale
        self.novel_weight = novel_weight
        self.reference = [str(name) for name in reference or []]

    def competitors(self, queries: list[str]) -> list[str]:
        """Reference names that are not already among the queries (compared case- and space-insensitively)."""
        asked = {q.strip().lower() for q in queries}
        return [name for name in self.reference if name.strip().lower() not in asked]

    def crop_embeddings(self, backbone, pixel_values: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """CLIP's L2-normalised embeddings of box crops, with the context margin: pixel_values
        [B, 3, S, S], boxes [B, K, 4] cxcywh in 0..1 of the padded square -> [B, K, E]. Image
        exemplars are embedded by this same path, so they match what candidate boxes are compared as."""
        b, k, _ = boxes.shape
        # Square crops, as CLIP saw its objects: stretching a 2:1 semicircle box to a square makes a dome.
        # Parts outside the image read as zeros, the mean colour the input is padded with.
        rois = self.context_rois(boxes, pixel_values.shape[-1]).to(pixel_values.device)  # [B*K, 5]
        crop = backbone.crop_size
        crops = roi_align(pixel_values.float(), rois, output_size=(crop, crop), aligned=True)  # [B*K, 3, c, c]
        return torch.nn.functional.normalize(backbone.encode_crops(crops).float(), dim=-1).view(b, k, -1)  # [B, K, E]

    def context_rois(self, boxes: torch.Tensor, side: int) -> torch.Tensor:
        """boxes [B, K, 4] cxcywh in 0..1 -> [B*K, 5] (image index, x1, y1, x2, y2) of their context squares in
        input pixels. One tensor, not a per-image list: an exported graph keeps a dynamic batch instead of
        unrolling one roi_align per image."""
        b, k, _ = boxes.shape
        squares = square_context(box_convert(boxes.float(), "cxcywh", "xyxy"), self.context) * side  # [B, K, 4]
        index = torch.arange(b, device=boxes.device, dtype=squares.dtype).repeat_interleave(k)[:, None]  # [B*K, 1]
        return torch.cat([index, squares.reshape(-1, 4)], 1)  # [B*K, 5]

    def region_embeddings(self, backbone, pixel_values: torch.Tensor, boxes: torch.Tensor,
                          region_map: torch.Tensor | None = None) -> torch.Tensor:
        """[B, K, E] L2-normalised embeddings of boxes [B, K, 4] cxcywh 0..1: here of their crops (one tower
        pass per box; `region_map` unused). `RegionPoolScorer` pools the one pass's map instead."""
        return self.crop_embeddings(backbone, pixel_values, boxes)

    def region_outputs(self, backbone, pixel_values: torch.Tensor, boxes: torch.Tensor,
                       region_map: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """([B*K, E] normalised embeddings that name the boxes, [B*K, E] a trained classifier's or None)."""
        return self.region_embeddings(backbone, pixel_values, boxes, region_map).flatten(0, 1), None

    def probabilities(self, embeds: torch.Tensor, query_embeds: torch.Tensor,
                      reference_embeds: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Softmax over queries and reference names of embeds [N, E] -> ([N, Q] the queries' share, [Q] bool:
        which queries are reference (base) names)."""
        q = query_embeds.shape[0]
        logits = self.logit_scale * embeds @ query_embeds.float().T  # [N, Q]
        is_reference = torch.zeros(q, dtype=torch.bool, device=logits.device)  # [Q]
        if reference_embeds is not None:
            reference = reference_embeds.to(query_embeds).float()  # [R, E]
            # A reference name that is also a query (same embedding) must not compete twice: the exported
            # file bakes every reference name and cannot drop them by text, so they are dropped by embedding.
            same = (reference @ query_embeds.float().T) > DUPLICATE_COSINE  # [R, Q]
            ref_logits = (self.logit_scale * embeds @ reference.T).masked_fill(same.any(-1), float("-inf"))  # [N, R]
            logits = torch.cat([logits, ref_logits], dim=-1)  # [N, Q + R]
            is_reference = same.any(0)  # [Q]: a reference (base) name
        return logits.softmax(-1)[:, :q], is_reference

    def naming(self, backbone, pixel_values: torch.Tensor, boxes: torch.Tensor, query_embeds: torch.Tensor,
               reference_embeds: torch.Tensor | None = None,
               region_map: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """How boxes [B, K, 4] cxcywh 0..1 are named, before objectness joins: ([B*K, Q] the queries' share of the
        softmax, [Q] bool: reference (base) names). With a trained region classifier, F-VLM's ensemble: its
        probability joins CLIP's as p_clip^(1 - s) * p_classifier^s, s per base / novel name."""
        embeds, classified = self.region_outputs(backbone, pixel_values, boxes, region_map)  # [B*K, E] each
        probs, is_reference = self.probabilities(embeds, query_embeds, reference_embeds)  # [B*K, Q], [Q]
        if classified is not None:
            trained, _ = self.probabilities(classified, query_embeds, reference_embeds)  # [B*K, Q]
            share = torch.where(is_reference, self.classifier_weight, self.novel_classifier_weight)  # [Q]
            probs = probs ** (1 - share) * trained**share
        return probs, is_reference

    @torch.no_grad()
    def __call__(
        self,
        backbone,
        pixel_values: torch.Tensor,
        outputs: dict,
        query_embeds: torch.Tensor,
        reference_embeds: torch.Tensor | None = None,
        region_map: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """New logits [B, P, Q] from `pred_boxes` [B, P, 4], `objectness` [B, P] and queries [Q, E];
        `reference_embeds` [R, E] join the softmax and are dropped from the result; `region_map` is the
        pass's map a `RegionPoolScorer` pools (crops ignore it)."""
        boxes, objectness = outputs["pred_boxes"].float(), outputs["objectness"].float()
        b, p, _ = boxes.shape
        k = min(self.topk, p)
        top = objectness.topk(k, dim=1).indices  # [B, K]
        chosen = torch.gather(boxes, 1, top[..., None].expand(-1, -1, 4))  # [B, K, 4] cxcywh
        probs, is_reference = self.naming(backbone, pixel_values, chosen, query_embeds, reference_embeds, region_map)
        weight = torch.where(is_reference, self.weight, self.novel_weight)  # [Q]: a reference (base) name gets w
        probs = probs.reshape(b, k, -1)  # [B, K, Q]
        obj = torch.gather(objectness, 1, top).sigmoid()[..., None]  # [B, K, 1]
        score = (obj ** (1 - weight) * probs**weight).clamp(1e-6, 1 - 1e-6)  # [B, K, Q]
        logits = torch.full((b, p, probs.shape[-1]), MASKED_LOGIT, device=boxes.device)
        logits.scatter_(1, top[..., None].expand(-1, -1, probs.shape[-1]), torch.logit(score))
        return logits  # [B, P, Q]
