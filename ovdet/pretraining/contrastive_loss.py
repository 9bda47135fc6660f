"""CLIP's symmetric InfoNCE loss over a batch of image-text pairs, with known extra positives."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def clip_contrastive_loss(
    image_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    logit_scale: torch.Tensor,
    positives: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean of the image->text and text->image cross-entropies over the batch (CLIP).

    Args:
        image_embeds: [N, E] unnormalised image embeddings.
        text_embeds: [N, E] unnormalised text embeddings; pair i is (image i, text i).
        logit_scale: scalar, the log of the inverse temperature (exponentiated here).
        positives: [N, N] bool, True where text j is a true description of image i (the
            diagonal included). Each row's target is spread evenly over its positives (and each
            column's, for text->image), as in UniCL: with a vocabulary as small as ShapeWorld's,
            "a red star" and "a photo of a star" occur many times in a batch, and treating every
            other star as a negative cancels the very signal that teaches shape.
            None: only the diagonal (CLIP).
    Returns:
        scalar loss.
    """
    image = F.normalize(image_embeds.float(), dim=-1)
    text = F.normalize(text_embeds.float(), dim=-1)
    logits = logit_scale.float().exp() * image @ text.T  # [N, N]
    if positives is None:
        targets = torch.arange(len(logits), device=logits.device)  # [N]
        return 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets))
    if not bool(positives.diagonal().all()):
        raise ValueError("positives must be True on the diagonal: every text describes its own image")
    pos = positives.float()  # [N, N]
    image_to_text = pos / pos.sum(1, keepdim=True)  # [N, N], rows sum to 1
    text_to_image = pos.T / pos.T.sum(1, keepdim=True)  # [N, N], rows sum to 1
    return 0.5 * (F.cross_entropy(logits, image_to_text) + F.cross_entropy(logits.T, text_to_image))
