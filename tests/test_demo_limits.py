"""The demo's limits as plain functions (K14, L4): query caps, timeouts that free the model,
header-only pixel checks, plain error lines, bounded upload storage, exemplar clicks, a busy port."""

import io
import os
import socket
import struct
import sys
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

from ovdet.demo import callbacks
from ovdet.demo.model_registry import ModelRegistry
from ovdet.demo.model_worker import ModelWorker, RequestTimeout
from ovdet.demo.upload_store import UploadStore, parse_size
from ovdet.models.detector import Detector

gr = pytest.importorskip("gradio")
from ovdet.demo.app import FAILED, DemoServer, build_app, cleared_outputs  # noqa: E402
from ovdet.demo.image_input import ImageInput  # noqa: E402


@pytest.fixture(autouse=True)
def uploads_in_tmp(tmp_path, monkeypatch):
    """These tests hand ImageInput files directly, as Gradio hands it uploads: make tmp_path the upload folder."""
    import gradio.utils

    monkeypatch.setattr(gradio.utils, "get_upload_folder", lambda: str(tmp_path))


def test_a_path_outside_the_upload_folder_is_never_opened(tmp_path, monkeypatch):
    import gradio.utils

    outside = tmp_path / "private.png"
    Image.new("RGB", (8, 8)).save(outside)
    monkeypatch.setattr(gradio.utils, "get_upload_folder", lambda: str(tmp_path / "uploads"))
    with pytest.raises(gr.Error, match="not an image file that can be read"):
        ImageInput(label="Image").preprocess(gr.data_classes.ImageData(path=str(outside)))

BOMB_SIDE = 13_000  # 169 megapixels in a ~170 KB PNG


def png_with_size(path, side: int, rows: int | None = None):
    """A greyscale PNG declaring side x side pixels, all black: `rows` of them actually stored."""
    rows = side if rows is None else rows
    deflate, zeros = zlib.compressobj(9), b"\0" * (side + 1)  # filter byte + one row of pixels
    data = b"".join(deflate.compress(zeros) for _ in range(rows)) + deflate.flush()

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", data) + chunk(b"IEND", b""))
    return path


@pytest.fixture
def no_decoding(monkeypatch):
    """Fails the test at the first decode of a file-backed image (before any pixel memory is taken)."""
    decoded = []

    def load(self):
        decoded.append(self.size)
        raise AssertionError(f"a {self.size} image was decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", load)
    return decoded


@pytest.fixture(scope="module")
def model_dir(tiny_clip_dir, tmp_path_factory):
    torch.manual_seed(0)
    det = Detector.from_clip(str(tiny_clip_dir), image_size=64)
    return det.save_pretrained(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture
def server(model_dir, tmp_path):
    return DemoServer(ModelRegistry({"tiny": str(model_dir)}), ModelWorker(timeout_s=60), tmp_path / "downloads")


@pytest.fixture(scope="module")
def image():
    return Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 80, 3), dtype=np.uint8))


def detect(server, image, queries="star", negatives="", crop=None):
    return server.run(image, queries, negatives, "", crop, "tiny", 0.0, 0.5, 10)


def page_error(call, *args, **kwargs) -> str:
    """The one line the page shows for call(*args, **kwargs)."""
    with pytest.raises(gr.Error) as err:
        call(*args, **kwargs)
    return err.value.message


def test_queries_and_negatives_are_capped_before_the_model_runs(server, image, monkeypatch):
    def no_model(*args, **kwargs):
        raise AssertionError("the model ran")

    monkeypatch.setattr(server.worker, "call", no_model)
    many = ", ".join(f"thing {i}" for i in range(20_000))
    assert page_error(detect, server, image, many).startswith(
        "20000 queries given; the demo takes at most 100 per request")
    negatives = ",".join(f"n{i}" for i in range(101))
    assert page_error(detect, server, image, "star", negatives).startswith(
        "101 negative queries given; the demo takes at most 100")
    assert len(callbacks.parse_queries(",".join(f"q{i}" for i in range(100)))) == 100  # the cap itself is allowed


def test_a_call_past_its_timeout_is_stopped_and_the_next_is_served():
    worker = ModelWorker(timeout_s=0.3)
    stopped = threading.Event()

    def runaway():  # a model call that would run 20 s: many Python steps, like layers or batches
        try:
            for _ in range(2000):
                time.sleep(0.01)
        finally:
            stopped.set()

    start = time.monotonic()
    with pytest.raises(RequestTimeout, match="longer than 0.3 s and was stopped"):
        worker.call(runaway)
    assert time.monotonic() - start < 2
    assert worker.call(lambda: "next") == "next"  # served at once, not after the runaway call
    assert time.monotonic() - start < 3
    assert stopped.wait(2)  # the runaway call itself was stopped, not left running


def test_calls_stuck_in_one_c_call_are_bounded():
    worker = ModelWorker(timeout_s=0.1, max_stopping=2)
    for _ in range(2):  # one sleep is one C call: it cannot be interrupted, only abandoned
        with pytest.raises(RequestTimeout, match="was stopped"):
            worker.call(time.sleep, 1.0)
    with pytest.raises(RequestTimeout, match="still stopping 2 earlier requests"):
        worker.call(lambda: "refused")  # refused rather than piling threads up
    time.sleep(1.2)
    assert worker.stopping == 0 and worker.call(lambda: "served") == "served"


def test_upload_pixels_are_checked_from_the_header_before_decoding(tmp_path, no_decoding, server, image):
    bomb = png_with_size(tmp_path / "bomb.png", BOMB_SIDE)
    assert bomb.stat().st_size < 600_000
    lazy = ImageInput(label="Image").preprocess(gr.data_classes.ImageData(path=str(bomb)))
    assert lazy.size == (BOMB_SIDE, BOMB_SIDE)
    with pytest.raises(ValueError, match=f"the image is {BOMB_SIDE}x{BOMB_SIDE}, over 40000000 pixels"):
        callbacks.check_image(lazy)
    assert page_error(detect, server, lazy).startswith(f"the image is {BOMB_SIDE}x{BOMB_SIDE}, over 40000000")
    crop = ImageInput(label="Exemplar crop").preprocess(gr.data_classes.ImageData(path=str(bomb)))
    assert page_error(detect, server, image, crop=crop).startswith(f"the exemplar crop is {BOMB_SIDE}x{BOMB_SIDE}")
    assert not Path(sys.modules[ImageInput.__module__].__file__).with_suffix(".pyi").exists()  # none written
    huge = png_with_size(tmp_path / "huge.png", 14_000, rows=1)  # over PIL's own guard: refused by Image.open
    message = page_error(ImageInput(label="Image").preprocess, gr.data_classes.ImageData(path=str(huge)))
    assert message == "the image declares over 40000000 pixels; downscale it first"
    assert no_decoding == []


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_gradios_own_image_input_decodes_the_whole_bomb(tmp_path, no_decoding):
    """Why ImageInput exists: gr.Image decodes every upload before the demo can look at its size."""
    bomb = png_with_size(tmp_path / "bomb.png", BOMB_SIDE)
    with pytest.raises(AssertionError, match="decoded"):
        gr.Image(type="pil").preprocess(gr.data_classes.ImageData(path=str(bomb)))


def test_broken_uploads_are_one_plain_line_without_server_paths(tmp_path, server, image):
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    message = page_error(ImageInput(label="Image").preprocess, gr.data_classes.ImageData(path=str(text)))
    assert message == ("the image is not an image file that can be read (UnidentifiedImageError); "
                                 "give a PNG, JPEG, WebP, GIF, BMP or TIFF image")
    truncated = tmp_path / "cut.png"
    buf = io.BytesIO()
    image.save(buf, "PNG")
    truncated.write_bytes(buf.getvalue()[:200])
    lazy = ImageInput(label="Image").preprocess(gr.data_classes.ImageData(path=str(truncated)))
    message = page_error(detect, server, lazy)
    assert message.startswith("the image cannot be decoded (OSError: ")
    for line in (message, callbacks.plain_message(OSError(f"cannot open '{truncated}'"))):
        assert str(tmp_path) not in line and "\n" not in line


def test_an_unexpected_failure_is_logged_not_shown(server, image, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("CUDA error in /srv/secret/model.py")

    monkeypatch.setattr(callbacks, "run_detection", broken)
    assert page_error(detect, server, image) == FAILED and "/srv/secret" in caplog.text


def test_upload_storage_is_capped_oldest_first_and_by_age(tmp_path):
    store = UploadStore(tmp_path / "gradio", max_bytes=3000, max_age_s=600)
    (tmp_path / "gradio" / "example.png").write_bytes(b"e" * 5000)
    store.pin_existing()  # example scenes are never pruned
    now = time.time()
    for i in range(6):  # 6 uploads of 1000 bytes, one a minute apart
        path = tmp_path / "gradio" / f"h{i}" / "up.png"
        path.parent.mkdir()
        path.write_bytes(b"x" * 1000)
        os.utime(path, (now - 300 + 60 * i,) * 2)
    assert store.prune() == 3000 and store.total_bytes() == 3000
    kept = sorted(p.parent.name for p in (tmp_path / "gradio").rglob("up.png"))
    assert kept == ["h3", "h4", "h5"] and (tmp_path / "gradio" / "example.png").is_file()
    os.utime(tmp_path / "gradio" / "h3" / "up.png", (now - 601,) * 2)
    assert store.prune() == 1000  # over the age, whatever the total
    assert parse_size("10mb") == 10 * 1024**2 and parse_size("500kb") == 500 * 1024
    with pytest.raises(ValueError, match="--max-upload-storage 'lots' is not a size"):
        parse_size("lots", "--max-upload-storage")


def test_first_click_marks_the_point_and_the_second_draws_the_box(server, image):
    class Click:
        def __init__(self, x, y):
            self.index = [x, y]

    clicks, box, marked = server.click([], image, Click(20, 10))
    assert box == "" and clicks == [(20.0, 10.0)]
    changed = np.argwhere((np.asarray(marked) != np.asarray(image)).any(-1))  # [N, (y, x)]
    assert len(changed) and np.abs(changed - [10, 20]).max() <= 12  # a cross at the click, nothing else
    clicks, box, boxed = server.click(clicks, image, Click(60, 40))
    assert clicks == [] and box == "20,10,60,40"
    diff = (np.asarray(boxed) != np.asarray(image)).any(-1)
    assert diff[10, 30] and diff[25, 20] and not diff[25, 40]  # the box outline, not its inside


def test_a_run_first_clears_the_status_line(model_dir, tmp_path):
    app = build_app(ModelRegistry({"tiny": str(model_dir)}), workdir=tmp_path)
    detect_button = next(b for b in app.blocks.values() if getattr(b, "elem_id", None) == "detect")
    timing = next(b for b in app.blocks.values() if getattr(b, "elem_id", None) == "timing")
    first = next(f for f in app.fns.values() if (detect_button._id, "click") in f.targets)
    assert first.fn is cleared_outputs and not first.queue and timing in first.outputs
    assert first.fn()[first.outputs.index(timing)] == ""
    run = next(f for f in app.fns.values() if f.trigger_after == first._id)
    assert run.api_name == "detect" and timing in run.outputs


def test_a_busy_port_is_one_line(capsys):
    from ovdet.cli.main import main

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        start = time.monotonic()
        assert main(["demo", "--port", str(port)]) == 2
    assert capsys.readouterr().err == f"ovdet demo: error: port {port} is in use: use --port\n"
    assert time.monotonic() - start < 60  # before any model is loaded
