"""Load user images (paths, PIL images, numpy arrays) into RGB PIL images, checked at the boundary."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ovdet.errors import ImageLoadError

MAX_PIXELS = 100_000_000  # refuse decompression bombs with a clear message, not a crash


def load_image(image) -> Image.Image:
    """Return an RGB PIL image from a path, a PIL image or an HxW / HxWxC array.

    Raises:
        ImageLoadError: missing, empty, undecodable or oddly shaped input; the message names it.
    """
    if isinstance(image, (str, Path)):
        return _load_path(Path(image))
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, np.ndarray):
        return _from_array(image)
    raise ImageLoadError(f"unsupported image type {type(image).__name__}; pass a path, a PIL image or a numpy array")


def _load_path(path: Path) -> Image.Image:
    if not path.exists():
        raise ImageLoadError(f"image '{path}' does not exist")
    if not path.is_file():
        raise ImageLoadError(f"image '{path}' is not a file")
    if path.stat().st_size == 0:
        raise ImageLoadError(f"image '{path}' is 0 bytes")
    try:
        with Image.open(path) as im:
            if im.width * im.height > MAX_PIXELS:
                raise ImageLoadError(f"image '{path}' is {im.width}x{im.height}, over {MAX_PIXELS} pixels")
            im.load()
            # Boxes are reported in the frame people see: honour the EXIF orientation.
            return ImageOps.exif_transpose(im).convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise ImageLoadError(f"image '{path}' cannot be decoded ({err.__class__.__name__}: {err})") from None


def _from_array(array: np.ndarray) -> Image.Image:
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        raise ImageLoadError(f"array image must be HxW, HxWx3 or HxWx4, got shape {array.shape}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ImageLoadError(f"array image is empty, shape {array.shape}")
    if array.dtype != np.uint8:
        if not np.issubdtype(array.dtype, np.floating) or not np.isfinite(array).all():
            raise ImageLoadError(f"array image must be uint8 or finite floats in 0..1, got {array.dtype}")
        array = (np.clip(array, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)
    return Image.fromarray(array).convert("RGB")
