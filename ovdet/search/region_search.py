"""A query against a region index: texts and image exemplars embedded by the index's own model, then scored."""

from __future__ import annotations

from ovdet.errors import OvdetError
from ovdet.search.region_encoder import model_fingerprint
from ovdet.search.region_index import RegionIndex
from ovdet.search.region_scorer import (
    Hit,
    as_tensors,
    rank_hits,
    score_regions,
    to_hits,
)


def check_model(index: RegionIndex, detector, name: str, folder) -> None:
    """Refuse, in one line, a detector other than the one the index was built with."""
    if model_fingerprint(detector) != index.fingerprint:
        raise OvdetError(
            f"index '{folder}' was built with model '{index.model}' (fingerprint {index.fingerprint[:12]}), not "
            f"'{name}'; search it with --model {index.model}, or index the photos again with this model into a new --out"
        )


def search(detector, index: RegionIndex, queries: list[str], exemplars=None, templates=None, top: int = 20,
           nms: float | None = 0.5, threshold: float = 0.0) -> list[Hit]:
    """The best `top` hits of texts `queries` and exemplars [(image, (x1, y1, x2, y2) pixels)], best first,
    each scored as `ovdet detect` scores that query with the same query list (templates: the model's own
    when None). `detector` must be in eval mode (as `Detector.from_pretrained` returns it after `.eval()`)."""
    from ovdet.models.exemplar import exemplar_labels
    from ovdet.models.scoring import build_query_bank
    from ovdet.models.text_encoder import validate_queries

    queries = validate_queries(queries) if queries or not exemplars else []
    if not index.num_regions:
        return []
    exemplar_embeds = detector.encode_exemplars(exemplars) if exemplars else None  # the caller put it in eval mode
    bank = build_query_bank(detector, queries, templates, "embed", exemplar_embeds)
    labels = queries + exemplar_labels(len(exemplars or []))
    rows = as_tensors(index)
    reference = bank.reference.float().cpu() if bank.reference is not None else None
    own_templates = templates is None or templates == detector.templates  # what the stored reference term used
    scores = score_regions(rows["embeds"], rows["objectness"], rows["logit_scale"], rows["logit_bias"],
                           bank.positives.float().cpu(), detector.rescorer, reference,
                           rows["reference_lse"] if own_templates else None,
                           rows.get("classifier_embeds"), rows.get("classifier_reference_lse"))  # [N, Q]
    ranked = rank_hits(scores, rows["boxes"], rows["image_rows"], top, nms, threshold)
    return to_hits(index, ranked, labels)
