"""Pixel values of any number type -> uint8, decided by the values' range, never by clipping.

Float TIFFs, PIL "F"/"I"/"I;16" images and float or wide-integer arrays carry no declared scale:
a float image in 0..1 clipped to 0..255 is black, one in 0..255 clipped to 0..1 is white, an
8-bit image stored as 16 bits and divided by 257 is black. Each gives zero detections without a
word. The range of the values says which scale was meant:
- floats within 0..1: x255; floats within 0..255: as they are;
- integers within 0..255: as they are; within 0..65535 (16-bit): /257;
- anything else (negative values, floats over 255, integers over 65535, NaN): refused in one line
  that names the range, so that no blank image ever reaches the detector.
"""

from __future__ import annotations

import numpy as np

from ovdet.errors import ImageLoadError

SIXTEEN_BIT_MAX = 65535


def to_uint8(pixels: np.ndarray, name: str = "image") -> np.ndarray:
    """[H, W] or [H, W, C] numbers -> the same shape in uint8, scaled by the values' range.

    Args:
        name: how the error names the input ("image 'x.tif'", "array image").
    Raises:
        ImageLoadError: non-finite values, or a range that is neither 0..1, 0..255 nor 0..65535.
    """
    if pixels.dtype == np.uint8:
        return pixels
    if pixels.dtype == np.bool_:
        return pixels.astype(np.uint8) * 255
    is_float = np.issubdtype(pixels.dtype, np.floating)
    if not is_float and not np.issubdtype(pixels.dtype, np.integer):
        raise ImageLoadError(f"{name} has pixels of type {pixels.dtype}; give uint8, integers or floats")
    if is_float and not np.isfinite(pixels).all():
        raise ImageLoadError(f"{name} has NaN or infinite pixel values; replace them before detecting")
    low, high = (pixels.min().item(), pixels.max().item()) if pixels.size else (0, 0)
    values = pixels.astype(np.float64)
    if is_float and low >= 0 and high <= 1:
        values = values * 255.0
    elif low >= 0 and high <= 255:
        pass
    elif not is_float and low >= 0 and high <= SIXTEEN_BIT_MAX:
        values = values / 257.0
    else:
        kind = "float" if is_float else "integer"
        usable = "0..1 or 0..255" if is_float else "0..255 or 0..65535"
        raise ImageLoadError(f"{name} has {kind} pixel values in {low:g}..{high:g}; rescale them to {usable}")
    out = np.clip(values + 0.5, 0, 255).astype(np.uint8)
    if high > low and out.min() == out.max():  # e.g. floats in 0..0.001: the picture is lost in 8 bits
        raise ImageLoadError(f"{name} has pixel values in {low:g}..{high:g}, blank once in 0..255; stretch its contrast")
    return out
