"""Box priors of the head (grid box biases); pixel geometry lives in `ovdet.preprocess.ImagePreprocessor`.

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


def corner_box_bias(grid_h: int, grid_w: int) -> torch.Tensor:
    """OWL-ViT's box prior (`compute_box_bias`): the logit of each cell's far *corner*
    (`arange(1, n + 1) / n`) for the centre and of 1/n for the size, with its 1e-4 offsets.

    Its checkpoints were trained with this prior, so they are only exact with it.

    Returns:
        [h*w, 4] cxcywh logits, row-major over the grid.
    """
    xs = torch.arange(1, grid_w + 1, dtype=torch.float32) / grid_w
    ys = torch.arange(1, grid_h + 1, dtype=torch.float32) / grid_h
    xx, yy = torch.meshgrid(xs, ys, indexing="xy")  # [h, w] each
    corners = torch.stack([xx, yy], dim=-1).view(-1, 2).clip(0.0, 1.0)  # [h*w, 2]
    sizes = torch.tensor([1.0 / grid_w, 1.0 / grid_h]).expand_as(corners)  # [h*w, 2]
    both = torch.cat([corners, sizes], dim=-1)  # [h*w, 4]
    return torch.log(both + 1e-4) - torch.log1p(-both + 1e-4)


def square_context(boxes_xyxy: torch.Tensor, context: float) -> torch.Tensor:
    """[..., 4] xyxy -> [..., 4] xyxy squares around the same centres, of side (1 + 2 * context) x the long side.

    How a CLIP saw objects (with a margin, never stretched): the crop re-scorer, the distillation target
    and the region pooling all cut this square. It may leave the image; RoIAlign reads zeros there, the
    normalised mean colour the input is padded with.
    """
    centre = (boxes_xyxy[..., :2] + boxes_xyxy[..., 2:]) / 2  # [..., 2]
    half = (boxes_xyxy[..., 2:] - boxes_xyxy[..., :2]).amax(-1, keepdim=True) * (0.5 + context)  # [..., 1]
    return torch.cat([centre - half, centre + half], dim=-1)  # [..., 4]
