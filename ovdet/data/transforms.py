"""Box-aware image pipelines (albumentations) that produce the detector's square input.

Geometry matches `ovdet.preprocess.ImagePreprocessor`, which inference uses: the longest side
is resized to `image_size` and the image is padded at the bottom/right, after normalisation,
with 0 (the mean colour). So a box normalised to the padded square means the same in training
and at inference.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import albumentations as A
import cv2
from albumentations.pytorch import ToTensorV2

BOX_FORMAT = "pascal_voc"  # xyxy in pixels
LABEL_FIELD = "names"  # per-box category names travel with the boxes through every transform


@dataclass(frozen=True)
class Augmentation:
    """Training augmentation strengths; `None` in its place means "resize and pad only".

    Args:
        scale_range: large-scale jitter: the resized image is scaled by a factor drawn from
            this range, then padded (< 1, zoom out) or randomly cropped (> 1, zoom in) back
            to the square input.
        hflip_p: probability of a horizontal flip (queries are category names, which a flip
            does not change).
        color_jitter: brightness, contrast and saturation jitter strength (hue gets a quarter).
        color_p: probability of colour jitter.
        min_visibility: a box cut by the crop is dropped when less than this fraction of it is left.
    """

    scale_range: tuple[float, float] = (0.5, 1.5)
    hflip_p: float = 0.5
    color_jitter: float = 0.2
    color_p: float = 0.8
    min_visibility: float = 0.5

    def __post_init__(self):
        low, high = self.scale_range
        if not 0 < low <= high:
            raise ValueError(f"scale_range must be (low, high) with 0 < low <= high, got {self.scale_range}")
        if not (0 <= self.hflip_p <= 1 and 0 <= self.color_p <= 1 and 0 <= self.min_visibility <= 1):
            raise ValueError(
                f"hflip_p, color_p and min_visibility must be in 0..1, got {self.hflip_p}, {self.color_p}, "
                f"{self.min_visibility}"
            )


def build_transform(
    image_size: int,
    image_mean: Sequence[float],
    image_std: Sequence[float],
    augmentation: Augmentation | None = None,
) -> A.Compose:
    """An albumentations pipeline: uint8 HxWx3 image + xyxy pixel boxes -> [3, S, S] tensor + boxes.

    Call it as `t(image=array, bboxes=boxes_xyxy, names=box_names)`. Without `augmentation`
    it is the evaluation pipeline: resize the longest side, normalise, pad bottom/right.
    """
    if image_size <= 0:
        raise ValueError(f"image_size must be positive, got {image_size}")
    resize = A.LongestMaxSize(max_size=image_size, area_for_downscale="image")  # antialiased like inference
    normalize = A.Normalize(mean=tuple(image_mean), std=tuple(image_std), max_pixel_value=255.0)
    pad = A.PadIfNeeded(image_size, image_size, position="top_left", border_mode=cv2.BORDER_CONSTANT, fill=0)
    if augmentation is None:
        steps = [resize, normalize, pad]
        min_visibility = 0.0
    else:
        aug = augmentation
        low, high = aug.scale_range
        jitter = aug.color_jitter
        steps = [
            resize,
            A.HorizontalFlip(p=aug.hflip_p),
            A.ColorJitter(brightness=jitter, contrast=jitter, saturation=jitter, hue=jitter / 4, p=aug.color_p),
            normalize,  # before any padding, so that padding is 0 = the mean colour
            A.RandomScale(scale_limit=(low - 1.0, high - 1.0), area_for_downscale="image", p=1.0),
            pad,
            A.RandomCrop(image_size, image_size),  # the identity unless the image was scaled up
        ]
        min_visibility = aug.min_visibility
    bbox_params = A.BboxParams(
        format=BOX_FORMAT,
        label_fields=[LABEL_FIELD],
        min_visibility=min_visibility,
        min_width=1.0,  # pixels: a sliver left by a crop is not a trainable box
        min_height=1.0,
        clip=True,
    )
    return A.Compose([*steps, ToTensorV2()], bbox_params=bbox_params)
