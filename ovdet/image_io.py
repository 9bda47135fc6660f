"""Load user images (paths, PIL images, numpy arrays) into RGB PIL images, checked at the boundary.

Whatever lies on disk gives either an RGB image or one `ImageLoadError` that names the file:
- declared size over `MAX_PIXELS`: refused before decoding (decompression-bomb guard);
- longer side over `max_side`: downscaled while loading (JPEG: by the decoder itself, 1/2..1/8,
  so the full image never sits in memory); `original_size(image)` keeps the size on disk, in
  which detections are reported;
- EXIF orientation applied, so boxes are in the frame people see;
- animations (GIF, APNG, WebP, multi-page TIFF): the first frame, with an `OvdetWarning`;
- greyscale of other number types (PIL "F", "I", "I;16", float or wide-integer arrays) mapped to
  8 bits by the values' range (`ovdet.pixel_range`: 0..1 floats x255, 0..255 as is, 16-bit /257),
  or refused in one line naming the range: never a black or white image that detects nothing;
- 0-pixel images refused (nothing to detect, and the resize would divide by zero);
- transparency (RGBA, LA, PA, P or RGB with a transparent colour) composited on white;
- CMYK, YCbCr, L, 1, P: PIL's conversion to RGB.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from ovdet.errors import ImageLoadError, OvdetWarning
from ovdet.pixel_range import to_uint8

MAX_PIXELS = 100_000_000  # refuse decompression bombs with a clear message, not a crash
MAX_SIDE = 4096  # detection runs at a few hundred pixels: more only costs memory
ORIGINAL_SIZE = "ovdet_original_size"  # key in `Image.info`: (width, height) on disk, displayed frame
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
_NUMERIC_MODES = ("F", "I", "I;16", "I;16B", "I;16L", "I;16N")  # one number per pixel, no fixed 0..255 scale


def load_image(image, max_side: int | None = MAX_SIDE) -> Image.Image:
    """Return an RGB PIL image from a path, a PIL image or an HxW / HxWx3 / HxWx4 array.

    Args:
        max_side: files whose longer side exceeds this are downscaled while loading; None keeps
            every pixel (training, where boxes are in the file's pixels).
    Raises:
        ImageLoadError: missing, empty, undecodable, too large or oddly shaped input; the message names it.
    """
    if isinstance(image, (str, Path)):
        return _load_path(Path(image), max_side)
    if isinstance(image, Image.Image):
        _check_not_empty(image.size, "PIL image")
        return to_rgb(image, "PIL image")
    if isinstance(image, np.ndarray):
        return _from_array(image)
    raise ImageLoadError(f"unsupported image type {type(image).__name__}; pass a path, a PIL image or a numpy array")


def original_size(image: Image.Image) -> tuple[int, int]:
    """(width, height) of the image as it is on disk (before any downscaling on load)."""
    return tuple(image.info.get(ORIGINAL_SIZE, image.size))


def to_rgb(image: Image.Image, name: str = "image") -> Image.Image:
    """Any PIL mode -> RGB: numeric modes mapped to 8 bits by their range, transparency composited on white.
    `name` names the image in the error a range that cannot be mapped raises."""
    if image.mode in _NUMERIC_MODES:
        image = Image.fromarray(to_uint8(np.asarray(image), name), "L")  # [H, W] uint8
    elif image.mode in _ALPHA_MODES or "transparency" in image.info:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, rgba)
    return image.convert("RGB")


def _load_path(path: Path, max_side: int | None) -> Image.Image:
    if not path.exists():
        raise ImageLoadError(f"image '{path}' does not exist")
    if not path.is_file():  # a folder, a FIFO or a device: never block reading it
        raise ImageLoadError(f"image '{path}' is not a file")
    if path.stat().st_size == 0:
        raise ImageLoadError(f"image '{path}' is 0 bytes")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # MAX_PIXELS decides, below
            with Image.open(path) as im:
                return _decode(im, path, max_side)
    except ImageLoadError:
        raise
    except Image.DecompressionBombError as err:
        raise ImageLoadError(f"image '{path}' is too large to decode safely ({err})") from None
    except MemoryError:
        raise ImageLoadError(f"image '{path}' does not fit in memory; downscale it first") from None
    except Exception as err:  # PIL's decoders raise many types on broken files; each is one line here
        raise ImageLoadError(f"image '{path}' cannot be decoded ({err.__class__.__name__}: {err})") from None


def _decode(im: Image.Image, path: Path, max_side: int | None) -> Image.Image:
    width, height = im.size
    if width * height > MAX_PIXELS:
        raise ImageLoadError(
            f"image '{path}' is {width}x{height}, over {MAX_PIXELS} pixels; refused as a possible decompression bomb"
        )
    if getattr(im, "is_animated", False) and im.format != "MPO":  # MPO: a photo plus its depth map or preview
        warnings.warn(f"image '{path}' is animated ({im.format}); using its first frame", OvdetWarning, stacklevel=4)
    if max_side and max(width, height) > max_side and im.format == "JPEG":
        scale = max_side / max(width, height)
        im.draft(im.mode, (max(1, round(width * scale)), max(1, round(height * scale))))  # DCT scaling while decoding
    im.load()
    _check_not_empty(im.size, f"image '{path}'")
    decoded = im.size
    ImageOps.exif_transpose(im, in_place=True)  # boxes are reported in the frame people see
    if im.size != decoded:  # turned by 90 degrees: the size on disk turns with it
        width, height = height, width
    rgb = to_rgb(im, f"image '{path}'")
    if max_side and max(rgb.size) > max_side:
        rgb.thumbnail((max_side, max_side), Image.Resampling.BILINEAR)
    rgb.info[ORIGINAL_SIZE] = (width, height)
    return rgb


def _from_array(array: np.ndarray) -> Image.Image:
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        raise ImageLoadError(f"array image must be HxW, HxWx3 or HxWx4, got shape {array.shape}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ImageLoadError(f"array image is empty, shape {array.shape}")
    array = to_uint8(array, f"array image of {array.dtype}")  # by range: 0..1 floats x255, 0..255 as is
    return to_rgb(Image.fromarray(array))


def _check_not_empty(size: tuple[int, int], name: str) -> None:
    if size[0] < 1 or size[1] < 1:
        raise ImageLoadError(f"{name} is empty ({size[0]}x{size[1]} pixels); give an image with at least one pixel")
