"""ovdet's mark on the files it writes, and the one rule built on it: replace only what carries it.

Every file ovdet writes says so inside itself, in the way its format allows:

| format | the mark |
| --- | --- |
| JSON object | top-level key `"written_by": "ovdet <version>"` |
| JSON list (COCO results must stay a bare list) | its sidecar `NAME.meta.json` is marked and records the list's sha256 |
| PNG | text chunk `written_by` |
| ONNX | `metadata_props` entry `written_by` |
| safetensors | header metadata `written_by` |
| Markdown, YAML, CSV, text | a first line `<!-- written by ovdet -->`, `# written by ovdet`, ... |

An existing file without the mark is the user's: `check_replaceable_file` refuses it in one line that
names it, before any slow work, unless the user passed `--overwrite`.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ovdet import __version__
from ovdet.errors import OvdetError

MARK_KEY = "written_by"
MARK_VALUE = f"ovdet {__version__}"
SHA_KEY = "sha256"

# First lines that mark a text file, by suffix.
TEXT_MARKS = {
    ".md": "<!-- written by ovdet -->",
    ".html": "<!-- written by ovdet -->",
    ".yaml": "# written by ovdet",
    ".yml": "# written by ovdet",
    ".txt": "# written by ovdet",
    ".csv": "# written by ovdet",
}


def is_mark(value) -> bool:
    return isinstance(value, str) and (value == "ovdet" or value.startswith("ovdet "))


def marked(obj: dict) -> dict:
    """A JSON object with ovdet's mark (a copy; the mark comes first)."""
    return {MARK_KEY: MARK_VALUE, **{k: v for k, v in obj.items() if k != MARK_KEY}}


def marked_text(path: str | Path, text: str) -> str:
    """`text` with the first line that marks a file of `path`'s suffix."""
    return f"{TEXT_MARKS[Path(path).suffix.lower()]}\n{text}"


def sidecar_path(path: str | Path) -> Path:
    """`preds.json` -> `preds.meta.json`: where a JSON list keeps its mark."""
    path = Path(path)
    return path.with_name(f"{path.stem}.meta.json")


def list_sidecar(data: bytes, meta: dict | None = None) -> dict:
    """The marked sidecar object for a JSON list whose file bytes are `data`."""
    return marked({**(meta or {}), SHA_KEY: hashlib.sha256(data).hexdigest()})


def png_info():
    """PIL `PngInfo` carrying the mark: pass as `image.save(path, pnginfo=png_info())`."""
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text(MARK_KEY, MARK_VALUE)
    return info


def is_ours(path: str | Path) -> bool:
    """True when `path` carries ovdet's mark (never raises: an unreadable file is not ours)."""
    path = Path(path)
    try:
        if path.is_symlink() or not path.is_file():
            return False
        suffix = path.suffix.lower()
        if suffix == ".json":
            return _json_is_ours(path)
        if suffix == ".png":
            return _png_is_ours(path)
        if suffix == ".onnx":
            return _onnx_is_ours(path)
        if suffix == ".safetensors":
            return _safetensors_is_ours(path)
        if suffix in TEXT_MARKS:
            with open(path, encoding="utf-8", errors="replace") as f:
                return f.readline().rstrip("\r\n") == TEXT_MARKS[suffix]
    except Exception:  # noqa: BLE001 - any reader failure means "not provably ours"
        return False
    return False


def check_replaceable_file(path: str | Path, option: str, overwrite: bool = False) -> Path:
    """Refuse, in one line, an existing file at `path` that ovdet did not write (unless `overwrite`).

    Args:
        option: how the user named the path (`--out`, `--report`), for the message.
    Raises:
        OvdetError naming the file and the two ways out.
    """
    path = Path(path)
    if overwrite or not (path.exists() or path.is_symlink()) or is_ours(path):
        return path
    if path.is_dir():
        raise OvdetError(f"{option} '{path}' is a folder; name a file")
    raise OvdetError(
        f"{option} '{path}' exists and was not written by ovdet; ovdet replaces only files it wrote: "
        "choose a new path or pass --overwrite to replace it"
    )


def _json_is_ours(path: Path) -> bool:
    data = path.read_bytes()
    obj = json.loads(data)
    if isinstance(obj, dict):
        return is_mark(obj.get(MARK_KEY))
    side = sidecar_path(path)
    if side == path or not side.is_file():
        return False
    meta = json.loads(side.read_bytes())
    return (isinstance(meta, dict) and is_mark(meta.get(MARK_KEY))
            and meta.get(SHA_KEY) == hashlib.sha256(data).hexdigest())


def _png_is_ours(path: Path) -> bool:
    from PIL import Image

    with Image.open(path) as im:
        return is_mark(getattr(im, "text", {}).get(MARK_KEY))


def _onnx_is_ours(path: Path) -> bool:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return any(p.key == MARK_KEY and is_mark(p.value) for p in model.metadata_props)


def _safetensors_is_ours(path: Path) -> bool:
    from safetensors import safe_open

    with safe_open(str(path), framework="np") as f:
        return is_mark((f.metadata() or {}).get(MARK_KEY))
