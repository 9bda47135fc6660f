"""A checkpoint's image processor settings (pixel mean/std, input size), read where transformers reads them.

transformers 5's `Processor.save_pretrained` writes only `processor_config.json`, with the image
processor's settings in its "image_processor" object; older folders have `preprocessor_config.json`.
transformers prefers the nested object, then the plain file (`ImageProcessingMixin.get_image_processor_dict`),
and so does ovdet: reading only the plain file silently dropped a checkpoint's own normalisation.
"""

from __future__ import annotations

from pathlib import Path

from ovdet.errors import ModelNotAvailableError
from ovdet.json_file import read_json_file

PROCESSOR_NAME = "processor_config.json"  # transformers.utils.PROCESSOR_NAME
IMAGE_PROCESSOR_NAME = "preprocessor_config.json"  # transformers.utils.IMAGE_PROCESSOR_NAME


def image_processor_config(folder: str | Path) -> dict:
    """The image processor's settings of a local model folder ({} when it has none)."""
    folder = Path(folder)
    for name, key in ((PROCESSOR_NAME, "image_processor"), (IMAGE_PROCESSOR_NAME, None)):
        file = folder / name
        if not file.is_file():
            continue
        data = read_json_file(file, error=ModelNotAvailableError)
        if not isinstance(data, dict):
            raise ModelNotAvailableError(f"'{file}' holds no JSON object; copy the model's processor files again")
        settings = data.get(key) if key else data
        if isinstance(settings, dict):
            return settings
    return {}


def image_normalisation(folder: str | Path, mean, std) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(image_mean, image_std) of the folder's image processor; the family's `mean`/`std` where it names none."""
    data = image_processor_config(folder)
    mean, std = _three(data.get("image_mean") or mean), _three(data.get("image_std") or std)
    for value, key in ((mean, "image_mean"), (std, "image_std")):
        if len(value) != 3 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
            raise ModelNotAvailableError(f"the image processor of '{folder}' has {key} {list(value)!r}; it needs 3 numbers")
    if any(v <= 0 for v in std):
        raise ModelNotAvailableError(f"the image processor of '{folder}' has image_std {list(std)!r}; it must be > 0")
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


def efficientnet_normalisation(folder: str | Path, mean, std) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(image_mean, image_std) on [0, 1] pixels that give what an `EfficientNetImageProcessor` gives (ALIGN).

    ALIGN's processor does not normalise (`do_normalize` false): it rescales 0..255 by `rescale_factor`
    (1/127.5) and subtracts 1 (`rescale_offset`), i.e. [-1, 1]; its `image_mean` / `image_std` are unused.
    Rescale, offset, normalise and `include_top` (a second division by the std) compose into one mean/std,
    so reading only `image_mean` / `image_std` would feed the tower other pixels. The family's `mean` /
    `std` where the folder has no image processor.
    """
    data = image_processor_config(folder)
    if not data:
        return image_normalisation(folder, mean, std)
    factor = float(data.get("rescale_factor", 1 / 255)) * 255.0 if data.get("do_rescale", True) else 1.0
    if factor <= 0:
        raise ModelNotAvailableError(f"the image processor of '{folder}' has rescale_factor {data.get('rescale_factor')!r}; it must be > 0")
    shift = 1.0 if data.get("do_rescale", True) and data.get("rescale_offset", False) else 0.0
    # x01 * factor - shift = (x01 - shift / factor) / (1 / factor)
    m, s = [shift / factor] * 3, [1.0 / factor] * 3
    if data.get("do_normalize", True):
        n_mean, n_std = image_normalisation(folder, (0.5,) * 3, (0.5,) * 3)  # EfficientNetImageProcessor's defaults
        m = [a + b * c for a, b, c in zip(m, n_mean, s)]  # ((x - m) / s - b) / d = (x - (m + b s)) / (s d)
        s = [a * b for a, b in zip(s, n_std)]
        if data.get("include_top", True):
            s = [a * b for a, b in zip(s, n_std)]
    return tuple(m), tuple(s)


def processor_image_size(folder: str | Path) -> int | None:
    """The square side the image processor resizes to (`size` {"height": n, "width": n}, as OWL's); else None."""
    size = image_processor_config(folder).get("size")
    if isinstance(size, dict) and isinstance(size.get("height"), int) and size.get("height") == size.get("width"):
        return size["height"]
    return None


def _three(value) -> tuple:
    """A per-channel value as 3 items (transformers accepts one number for all channels)."""
    return (value,) * 3 if isinstance(value, (int, float)) else tuple(value) if isinstance(value, (list, tuple)) else (value,)
