"""The page's image inputs: an upload is opened lazily, so its pixel count is checked before decoding.

Gradio's own `gr.Image(type="pil")` decodes every upload in full (`convert("RGB")`) before the
demo sees it: a 0.5 MB PNG that declares 169 megapixels costs 1.3 GB there, and a broken file
shows Gradio's message with the server's temporary path. `ImageInput` only reads the header
(`PIL.Image.open` is lazy) and hands the open image on; `callbacks.check_image` checks its
size and decodes it. A file PIL cannot identify is one plain line that names no path.
An image given as a URL (`{"path": "http://..."}`) is refused, never fetched: Gradio would download
it into the upload folder with no size cap (only its public-IP check stood in the way).
"""

from __future__ import annotations

import base64
import binascii
import io
import warnings

import gradio as gr
from gradio import component_meta
from gradio_client.utils import is_http_url_like
from PIL import Image

from ovdet.demo.callbacks import MAX_PIXELS


# Gradio's component metaclass writes a .pyi stub next to the module of every new component class
# (an aid for developing custom components); importing the demo should write no files.
_write_stub, component_meta.create_or_modify_pyi = component_meta.create_or_modify_pyi, lambda *args: None


class ImageInput(gr.Image):
    """gr.Image (the same widget on the page) whose uploads reach the callbacks undecoded."""

    is_template = True  # the page draws it with gr.Image's widget

    async def async_move_resource_to_block_cache(self, url_or_file_path):
        """Gradio's copy into the upload folder, for files only: a URL is refused, never downloaded."""
        self._refuse_url(url_or_file_path)
        return await super().async_move_resource_to_block_cache(url_or_file_path)

    def move_resource_to_block_cache(self, url_or_file_path):
        self._refuse_url(url_or_file_path)
        return super().move_resource_to_block_cache(url_or_file_path)

    def _refuse_url(self, url_or_file_path) -> None:
        if url_or_file_path is not None and is_http_url_like(str(url_or_file_path)):
            raise gr.Error(f"the {(self.label or 'image').lower()} must be uploaded; this demo fetches no URLs",
                           print_exception=False)

    def preprocess(self, payload) -> Image.Image | None:
        """The upload as a PIL image with only its header read; gr.Error when it is no image."""
        if payload is None:
            return None
        what = (self.label or "image").lower()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # check_image decides
                return Image.open(_source(payload))  # reads the header only
        except Image.DecompressionBombError:  # PIL's own guard, at twice its MAX_IMAGE_PIXELS
            raise gr.Error(f"the {what} declares over {MAX_PIXELS} pixels; downscale it first",
                           print_exception=False) from None
        except Exception as err:
            raise gr.Error(f"the {what} is not an image file that can be read ({type(err).__name__}); "
                           "give a PNG, JPEG, WebP, GIF, BMP or TIFF image", print_exception=False) from None


component_meta.create_or_modify_pyi = _write_stub  # Gradio's own components keep their stubs


def _source(payload):
    """A file inside the demo's upload folder (checked here, whatever Gradio let through), or the bytes of a
    base64 data URL. A path a client names anywhere else is refused: the server's files are not inputs."""
    if payload.path:
        from pathlib import Path

        from gradio.utils import get_upload_folder

        path, uploads = Path(payload.path).resolve(), Path(get_upload_folder()).resolve()
        if not path.is_relative_to(uploads) or not path.is_file():
            raise ValueError("not an upload")
        return str(path)
    if payload.url and payload.url.startswith("data:"):
        try:
            return io.BytesIO(base64.b64decode(payload.url.split(",", 1)[-1], validate=False))
        except (binascii.Error, ValueError):
            raise ValueError("bad base64") from None
    raise ValueError("no file")
