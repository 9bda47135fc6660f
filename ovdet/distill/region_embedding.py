"""Box embeddings two ways: pooled from one pass of dense features (the student), or from crops (the teacher).

CLIPSelf's insight: a CLIP embeds a crop well but its dense features pooled over the same box badly; the
crop embedding is therefore a label-free target for the pooled one. Both functions take boxes as a list,
one [K_i, 4] xyxy tensor per image in pixels of the model input, as `torchvision.ops.roi_align` does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.ops import roi_align

from ovdet.distill.region_tower import RegionTower
from ovdet.errors import OvdetError


def check_boxes(pixel_values: torch.Tensor, boxes_xyxy_per_image: list[torch.Tensor]) -> None:
    """One [K_i, 4] box tensor per image of the batch, or a one-line error naming what is wrong."""
    if len(boxes_xyxy_per_image) != pixel_values.shape[0]:
        raise OvdetError(
            f"got {len(boxes_xyxy_per_image)} box tensors for {pixel_values.shape[0]} images; "
            "pass one [K, 4] xyxy tensor per image"
        )
    for i, boxes in enumerate(boxes_xyxy_per_image):
        if boxes.ndim != 2 or boxes.shape[-1] != 4:
            raise OvdetError(f"boxes of image {i} have shape {tuple(boxes.shape)}; pass [K, 4] xyxy in input pixels")


def dense_region_embeddings(
    tower: RegionTower, pixel_values: torch.Tensor, boxes_xyxy_per_image: list[torch.Tensor]
) -> torch.Tensor:
    """L2-normalised region embeddings from ONE pass of the tower's dense map, pooled by the tower's own pooling.

    Args:
        tower: the region view of a vision tower.
        pixel_values: [B, 3, S, S] normalised input.
        boxes_xyxy_per_image: B tensors [K_i, 4], xyxy in pixels of the input.
    Returns:
        [K, E] with K = sum K_i, in image order.
    """
    check_boxes(pixel_values, boxes_xyxy_per_image)
    fmap = tower.dense_map(pixel_values)  # [B, C, h, w]
    scale = fmap.shape[-1] / pixel_values.shape[-1]  # cells per input pixel
    boxes = [b.to(fmap) for b in boxes_xyxy_per_image]
    rois = roi_align(fmap, boxes, output_size=tower.roi_size, spatial_scale=scale, sampling_ratio=-1, aligned=True)
    return F.normalize(tower.pool_regions(rois), dim=-1)  # [K, C, r, r] -> [K, E]


def crop_images(
    pixel_values: torch.Tensor, boxes_xyxy_per_image: list[torch.Tensor], crop_size: int
) -> torch.Tensor:
    """Each box cut out of its image and resized (stretched, as CLIPSelf does) to crop_size: [K, 3, c, c]."""
    check_boxes(pixel_values, boxes_xyxy_per_image)
    boxes = [b.to(pixel_values) for b in boxes_xyxy_per_image]
    # Bilinear sampling on the input grid; sampling_ratio=-1 averages ceil(box/crop) samples per output pixel,
    # an anti-aliased downscale for boxes larger than the crop.
    return roi_align(pixel_values, boxes, output_size=crop_size, spatial_scale=1.0, sampling_ratio=-1, aligned=True)


def crop_embeddings(
    tower: RegionTower, pixel_values: torch.Tensor, boxes_xyxy_per_image: list[torch.Tensor]
) -> torch.Tensor:
    """L2-normalised image embeddings of the box crops (one tower pass per crop, at the tower's own resolution).

    Args / Returns: as `dense_region_embeddings`; [K, E].
    """
    crops = crop_images(pixel_values, boxes_xyxy_per_image, tower.crop_size)  # [K, 3, c, c]
    return F.normalize(tower.encode_crops(crops), dim=-1)  # [K, E]
