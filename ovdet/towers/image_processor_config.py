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


def processor_image_size(folder: str | Path) -> int | None:
    """The square side the image processor resizes to (`size` {"height": n, "width": n}, as OWL's); else None."""
    size = image_processor_config(folder).get("size")
    if isinstance(size, dict) and isinstance(size.get("height"), int) and size.get("height") == size.get("width"):
        return size["height"]
    return None


def _three(value) -> tuple:
    """A per-channel value as 3 items (transformers accepts one number for all channels)."""
    return (value,) * 3 if isinstance(value, (int, float)) else tuple(value) if isinstance(value, (list, tuple)) else (value,)
