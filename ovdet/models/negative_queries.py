"""Negative queries: a detection whose region matches a negative at least as well as its positive is dropped.

Negatives are scored together with the positives (with crop re-scoring they compete in one
softmax), but detections come from the positives alone and are only ever removed afterwards, so
a negative can never add a detection, nor change the score of one it keeps.
"""

from __future__ import annotations

import torch

# Logits this close count as a tie: the same embedding in two columns of one matmul may differ in
# the last bits, and a negative equal to the positive must still remove it.
TIE_TOLERANCE = 1e-4


def negative_veto(joint_logits: torch.Tensor, num_positive: int) -> torch.Tensor:
    """Which (region, positive) pairs a negative beats.

    Args:
        joint_logits: [B, P, Q + N] positives first, then negatives, scored together.
        num_positive: Q.
    Returns:
        [B, P, Q] bool, True where the region's best negative logit >= its positive logit (a tie, up
        to TIE_TOLERANCE, drops it: a negative equal to the positive removes all of its detections).
    """
    positive, negative = joint_logits[..., :num_positive], joint_logits[..., num_positive:]
    best_negative = negative.max(dim=-1, keepdim=True).values  # [B, P, 1]
    return best_negative >= positive - TIE_TOLERANCE  # [B, P, Q]


def drop_vetoed(detections: dict[str, torch.Tensor], veto: torch.Tensor) -> dict[str, torch.Tensor]:
    """Remove one image's detections whose (region, query) pair is vetoed.

    Args:
        detections: PostProcess output for one image (`regions` [K] and `labels` [K] index the pairs).
        veto: [P, Q] bool from `negative_veto`.
    """
    vetoed = veto.cpu()[detections["regions"], detections["labels"]]  # [K]
    return {key: value[~vetoed] for key, value in detections.items()}
