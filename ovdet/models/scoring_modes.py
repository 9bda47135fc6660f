"""How a detector names its boxes, chosen per call (`--scoring` on detect, eval and label).

A model folder saves one way (its config.json: `region_scoring`, `rescore`, or neither). Users comparing
speed against accuracy want the others without editing that file:
- `model`: as saved;
- `region`: one-pass region scoring (the top regions pooled from the same tower pass; ResNet CLIP towers);
- `crops`: crop re-scoring (each top region's context crop re-encoded by CLIP: 33 tower passes for 32
  regions, the most accurate on a tower whose crops name objects well);
- `head`: the head's own region embeddings alone (the dense path, no second look at any box).
"""

from __future__ import annotations

SCORING_MODES = ("model", "region", "crops", "head")
SCORING_HELP = ("how boxes are named: model (as its config.json says), region (one pass: the top regions pooled "
                "from the same tower pass), crops (CLIP re-encodes each top region's crop: slower, ResNet CLIP "
                "towers), head (the head's own region embeddings only)")
# The settings a mode gets when the model's config.json has none of its own: the previous shipped model's
# crop re-scoring and the tuned one-pass weights of the embedded model (docs/RESULTS.md §3 and §5c).
CROPS = {"topk": 32, "weight": 0.8, "context": 0.2}
REGION = {"topk": 32, "weight": 0.5, "novel_weight": 0.7, "context": 0.2}


def apply_scoring(detector, mode: str) -> None:
    """Set `detector` to score the way `mode` names (ValueError naming the mode and the fix otherwise)."""
    if mode not in SCORING_MODES:
        raise ValueError(f"--scoring {mode!r} is not a scoring mode; use one of {', '.join(SCORING_MODES)}")
    if mode == "model":
        return
    region, crops = detector.region_scoring, detector.rescore
    # The training names keep competing in the softmax whichever way the boxes are named.
    reference = (region or crops or {}).get("reference")
    extra = {"reference": reference} if reference else {}
    try:
        detector.set_rescore(None)
        if mode == "head":
            detector.set_region_scoring(None)
        elif mode == "region":
            detector.set_region_scoring(region or {**REGION, **extra})
        else:
            detector.set_region_scoring(region)
            detector.set_rescore(crops or {**CROPS, **extra})
    except ValueError as err:
        detector.set_region_scoring(region)  # back to as saved (a failed setter changed nothing)
        detector.set_rescore(crops)
        raise ValueError(f"--scoring {mode}: {err}; use --scoring model or head") from None
