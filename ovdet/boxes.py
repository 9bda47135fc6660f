"""Box geometry shared by the head and postprocess: grid priors and pixel rescaling.

Conversions between formats use `torchvision.ops.box_convert`; only what torchvision lacks is here.
"""

from __future__ import annotations

import torch


def inverse_sigmoid(x: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """logit(x), clamped so that 0 and 1 stay finite."""
    x = x.clamp(eps, 1 - eps)
    return torch.log(x / (1 - x))


def grid_box_bias(grid_h: int, grid_w: int) -> torch.Tensor:
    """Box prior per patch in logit space (OWL-ViT's box bias).

    The sigmoid of this bias is a box centred on the patch centre and one patch in size, so an
    untrained box head (zero last layer) predicts exactly the patch it sits on.

    Returns:
        [h*w, 4] cxcywh logits, row-major over the grid.
    """
    ys = (torch.arange(grid_h, dtype=torch.float32) + 0.5) / grid_h
    xs = (torch.arange(grid_w, dtype=torch.float32) + 0.5) / grid_w
    cy, cx = torch.meshgrid(ys, xs, indexing="ij")  # [h, w] each
    centres = torch.stack([cx.flatten(), cy.flatten()], dim=-1)  # [h*w, 2]
    sizes = torch.tensor([1.0 / grid_w, 1.0 / grid_h]).expand_as(centres)  # [h*w, 2]
    return inverse_sigmoid(torch.cat([centres, sizes], dim=-1))  # [h*w, 4]


def normalized_to_pixels(boxes_xyxy: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Map boxes normalised to the padded square input back to the original image's pixels.

    The image was resized by its longest side and padded at the bottom/right, so one unit of
    the padded square is `max(width, height)` original pixels; boxes are clipped to the image.

    Args:
        boxes_xyxy: [K, 4] in 0..1 of the padded square.
    Returns:
        [K, 4] xyxy in original pixels.
    """
    side = float(max(width, height))
    boxes = boxes_xyxy * side
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height)
    return boxes


def pixels_to_normalized(boxes_xyxy: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Inverse of `normalized_to_pixels` (without clipping): pixels -> 0..1 of the padded square."""
    return boxes_xyxy / float(max(width, height))
