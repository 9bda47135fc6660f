"""Whatever image files users have: each gives a correct result or one clear error naming the file."""

import json
import os
import struct
import subprocess
import sys
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ovdet.cli.detect import DEFAULT_MODEL
from ovdet.errors import ImageLoadError, OvdetWarning
from ovdet.image_io import MAX_PIXELS, load_image, original_size
from ovdet.models.detector import Detector

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
EXIF_ORIENTATION = 0x0112


@pytest.fixture(scope="module")
def detector(tiny_clip_dir):
    return Detector.from_clip(str(tiny_clip_dir), image_size=32)


def png_bytes(width: int, height: int, bit_depth: int, colour_type: int, rows: bytes) -> bytes:
    """A PNG written by hand: any declared size (decompression bombs) and 16-bit colour."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def random_jpeg(path, size=(64, 48)):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path, quality=90)
    return path


# ---- files that cannot give an image: one ImageLoadError naming the file ------------------------
def test_missing_directory_empty_and_fifo_are_named(tmp_path):
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)  # reading it would block forever: it must be refused without opening
    for path, message in [(tmp_path / "missing.jpg", "does not exist"), (tmp_path, "is not a file"),
                          (empty, "0 bytes"), (fifo, "is not a file")]:
        with pytest.raises(ImageLoadError, match=message) as err:
            load_image(path)
        assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_truncated_jpeg_and_text_named_jpg_cannot_be_decoded(tmp_path):
    whole = random_jpeg(tmp_path / "whole.jpg").read_bytes()
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(whole[: len(whole) // 2])
    text = tmp_path / "notes.jpg"
    text.write_text("this is not an image\n")
    for path in (truncated, text):
        with pytest.raises(ImageLoadError, match="cannot be decoded") as err:
            load_image(path)
        assert str(path) in str(err.value)


@pytest.mark.parametrize("width, height", [(12_000, 9_000), (50_000, 50_000)])  # ours; PIL's own guard
def test_decompression_bomb_is_refused_before_decoding(tmp_path, width, height):
    assert width * height > MAX_PIXELS
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_bytes(width, height, 8, 0, b"\x00" * 64))  # a few bytes declaring a huge image
    with pytest.raises(ImageLoadError, match="too large|decompression bomb") as err:
        load_image(bomb)
    assert str(bomb) in str(err.value)


# ---- large real images: downscaled while loading, detections in the file's pixels ---------------
def _peak_rss_growth_mb(path, max_side) -> tuple[tuple[int, int], float]:
    code = (  # VmHWM: the peak resident memory of this process, in kB (Linux)
        "import sys\n"
        "from ovdet.image_io import load_image\n"
        "def peak(): return int(open('/proc/self/status').read().split('VmHWM:')[1].split()[0])\n"
        "before = peak()\n"
        "im = load_image(sys.argv[1], max_side=None if sys.argv[2] == 'None' else int(sys.argv[2]))\n"
        "print(im.width, im.height, (peak() - before) / 1024)\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(path), str(max_side)], capture_output=True, text=True,
                         env=ENV, timeout=120, check=True).stdout.split()
    return (int(out[0]), int(out[1])), float(out[2])


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads the peak memory from Linux's /proc")
def test_large_jpeg_is_decoded_small_with_bounded_memory(tmp_path):
    big = tmp_path / "big.jpg"
    Image.new("RGB", (8000, 6000), (90, 140, 200)).save(big, quality=50)  # 144 MB as pixels, small on disk
    size, growth = _peak_rss_growth_mb(big, 1000)
    assert size == (1000, 750)
    full_size, full_growth = _peak_rss_growth_mb(big, None)  # the control: decoding every pixel
    assert full_size == (8000, 6000) and full_growth > 100
    assert growth < 40, f"downscaled load grew the peak memory by {growth:.0f} MB (full decode: {full_growth:.0f} MB)"


def test_large_image_detections_are_in_the_files_pixels(detector, tmp_path):
    wide = tmp_path / "wide.png"
    Image.new("RGB", (5000, 1000), (200, 30, 30)).save(wide)
    image = load_image(wide)
    assert max(image.size) == 4096 and original_size(image) == (5000, 1000)
    dets = detector.detect(wide, ["red"], threshold=0.0, nms=None, max_detections=50)[0]
    assert dets and max(d.box[2] for d in dets) > 4096  # reported in the 5000-pixel frame, not the loaded one
    assert all(0 <= d.box[0] <= d.box[2] <= 5000 and 0 <= d.box[1] <= d.box[3] <= 1000 for d in dets)


# ---- unusual but valid images: converted correctly ---------------------------------------------
def test_tiny_and_greyscale_images(detector, tmp_path):
    Image.new("RGB", (1, 1), (10, 20, 30)).save(tmp_path / "one.png")
    Image.new("L", (20, 10), 77).save(tmp_path / "grey.png")
    assert load_image(tmp_path / "one.png").getpixel((0, 0)) == (10, 20, 30)
    assert load_image(tmp_path / "grey.png").getpixel((5, 5)) == (77, 77, 77)
    for name, (w, h) in [("one.png", (1, 1)), ("grey.png", (20, 10))]:
        for d in detector.detect(tmp_path / name, ["x"], threshold=0.0)[0]:
            assert 0 <= d.box[0] <= d.box[2] <= w and 0 <= d.box[1] <= d.box[3] <= h and 0 <= d.score <= 1


def test_cmyk_jpeg_becomes_rgb(tmp_path):
    Image.new("CMYK", (16, 16), (255, 0, 0, 0)).save(tmp_path / "cmyk.jpg", quality=95)  # pure cyan ink
    r, g, b = load_image(tmp_path / "cmyk.jpg").getpixel((8, 8))
    assert r < 20 and g > 235 and b > 235


def test_transparency_is_composited_on_white(tmp_path):
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[0, 0] = (255, 0, 0, 255)  # opaque red
    rgba[0, 1] = (255, 0, 0, 0)  # transparent red: shows the white background
    rgba[0, 2] = (255, 0, 0, 128)  # half red
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    im = load_image(tmp_path / "rgba.png")
    assert im.getpixel((0, 0)) == (255, 0, 0) and im.getpixel((1, 0)) == (255, 255, 255)
    assert im.getpixel((2, 0))[0] == 255 and 120 <= im.getpixel((2, 0))[1] <= 135
    la = Image.fromarray(np.stack([np.full((4, 4), 0, np.uint8), np.full((4, 4), 0, np.uint8)], -1), "LA")
    la.save(tmp_path / "la.png")  # black, fully transparent
    assert load_image(tmp_path / "la.png").getpixel((0, 0)) == (255, 255, 255)
    palette = Image.new("P", (4, 4), 1)
    palette.putpalette([0, 0, 0, 0, 255, 0] + [0] * 762)
    palette.putpixel((0, 0), 0)
    palette.save(tmp_path / "p.png", transparency=0)  # index 0 (black) is transparent
    im = load_image(tmp_path / "p.png")
    assert im.getpixel((0, 0)) == (255, 255, 255) and im.getpixel((1, 1)) == (0, 255, 0)
    assert load_image(Image.fromarray(rgba, "RGBA")).getpixel((1, 0)) == (255, 255, 255)  # in memory too
    assert load_image(rgba).getpixel((1, 0)) == (255, 255, 255)


def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path):
    grey = np.array([[0, 1000, 32768, 65535]], np.uint16)
    Image.fromarray(grey).save(tmp_path / "grey16.png")
    assert [load_image(tmp_path / "grey16.png").getpixel((x, 0))[0] for x in range(4)] == [0, 4, 128, 255]
    rgb = np.array([[[40000, 1000, 65535]]], np.uint16)  # one pixel, colour type 2 at 16 bits
    (tmp_path / "rgb16.png").write_bytes(png_bytes(1, 1, 16, 2, b"\x00" + rgb.astype(">u2").tobytes()))
    got = load_image(tmp_path / "rgb16.png").getpixel((0, 0))
    assert all(abs(g - v / 257) <= 1 for g, v in zip(got, (40000, 1000, 65535)))  # PIL keeps the high byte


def _exif_rotated_jpeg(path, displayed: Image.Image, orientation: int = 6) -> None:
    """Store `displayed` turned so that EXIF orientation 6 (rotate 90 degrees clockwise) shows it upright."""
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = orientation
    displayed.rotate(90, expand=True).save(path, exif=exif, quality=95)


def test_exif_orientation_is_honoured(detector, tmp_path):
    displayed = Image.new("RGB", (40, 60), (255, 255, 255))  # portrait, as the camera's user saw it
    displayed.paste((255, 0, 0), (0, 0, 10, 10))  # red mark at the top-left
    _exif_rotated_jpeg(tmp_path / "rotated.jpg", displayed)
    assert Image.open(tmp_path / "rotated.jpg").size == (60, 40)  # stored landscape
    im = load_image(tmp_path / "rotated.jpg")
    assert im.size == (40, 60) and original_size(im) == (40, 60)
    r, g, b = im.getpixel((4, 4))
    assert r > 200 and g < 60 and b < 60
    for d in detector.detect(tmp_path / "rotated.jpg", ["red"], threshold=0.0)[0]:
        assert d.box[2] <= 40 and d.box[3] <= 60  # boxes in the displayed (portrait) frame


def test_exif_rotation_and_downscaling_together(tmp_path):
    _exif_rotated_jpeg(tmp_path / "tall.jpg", Image.new("RGB", (300, 2400), (0, 0, 255)))
    im = load_image(tmp_path / "tall.jpg", max_side=600)
    assert im.size == (75, 600) and original_size(im) == (300, 2400)


def test_animated_gif_gives_its_first_frame_with_a_warning(tmp_path):
    frames = [Image.new("RGB", (8, 8), colour) for colour in [(255, 0, 0), (0, 255, 0), (0, 0, 255)]]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    with pytest.warns(OvdetWarning, match=r"anim\.gif' is animated.*first frame"):
        im = load_image(tmp_path / "anim.gif")
    r, g, b = im.getpixel((4, 4))
    assert r > 200 and g < 60 and b < 60


# ---- a batch with bad files: the good ones are processed, each bad one is reported -------------
def test_cli_batch_with_bad_files_processes_the_good_ones(tiny_clip_dir, tmp_path):
    model = Detector.from_clip(str(tiny_clip_dir), image_size=32).save_pretrained(tmp_path / "model")
    good = random_jpeg(tmp_path / "good.jpg")
    frames = [Image.new("RGB", (8, 8), c) for c in [(255, 0, 0), (0, 255, 0)]]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    junk = tmp_path / "junk.jpg"
    junk.write_text("not an image")
    missing = tmp_path / "missing.png"
    out = tmp_path / "res.json"
    paths = [str(good), str(junk), str(tmp_path / "anim.gif"), str(missing)]
    proc = subprocess.run([sys.executable, "-m", "ovdet.cli.main", "detect", *paths, "-q", "x", "--model", str(model),
                           "--threshold", "0", "--out", str(out)], capture_output=True, text=True, env=ENV, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "error" in line]
    assert len(errors) == 2 and str(junk) in errors[0] and str(missing) in errors[1]
    assert any("warning" in line and "anim.gif" in line and "first frame" in line for line in proc.stderr.splitlines())
    records = json.loads(out.read_text())
    assert [r["path"] for r in records] == paths
    assert records[0]["detections"] and records[2]["detections"]
    assert (records[0]["width"], records[0]["height"]) == (64, 48)
    assert "cannot be decoded" in records[1]["error"] and "does not exist" in records[3]["error"]
    assert "detections" not in records[1] and "detections" not in records[3]


# ---- numeric pixel modes: mapped to 8 bits by their range, never clipped to black or white ------------
SCENE = Path(__file__).resolve().parents[1] / "ovdet" / "assets" / "scene.png"


def _numeric_files(tmp_path, grey: np.ndarray) -> dict:
    """The same greyscale picture [H, W] uint8 as files and arrays of other number types, written by PIL."""
    Image.fromarray(grey.astype(np.float32) / 255).save(tmp_path / "float01.tif")  # mode F, 0..1
    Image.fromarray(grey.astype(np.float32)).save(tmp_path / "float255.tif")  # mode F, 0..255
    Image.fromarray(grey, "L").convert("I").save(tmp_path / "mode_i.tif")  # mode I (int32), 0..255
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # Pillow 12 deprecates saving mode I as PNG
        Image.fromarray(grey, "L").convert("I").save(tmp_path / "mode_i.png")  # read back as I;16, 0..255
    files = {name: tmp_path / name for name in ("float01.tif", "float255.tif", "mode_i.tif", "mode_i.png")}
    return {**files, "L": Image.fromarray(grey, "L"), "pil I": Image.fromarray(grey, "L").convert("I"),
            "float array 0..1": grey.astype(np.float32) / 255, "float array 0..255": grey.astype(np.float64),
            "int32 array 0..255": grey.astype(np.int32)}


def test_numeric_modes_load_as_the_same_picture(tmp_path):
    grey = np.random.default_rng(0).integers(0, 256, (24, 32), dtype=np.uint8)
    for name, source in _numeric_files(tmp_path, grey).items():
        pixels = np.asarray(load_image(source), dtype=np.int16)[..., 0]  # [H, W]
        assert np.abs(pixels - grey).max() <= 1, name


@pytest.mark.parametrize(
    "array, message",
    [
        (np.array([[-1.0, 0.5], [2.0, 0.0]], np.float32), r"float pixel values in -1..2; rescale them to 0..1 or 0..255"),
        (np.array([[0.0, 300.0]], np.float64), r"float pixel values in 0..300"),
        (np.array([[0, 100000]], np.int32), r"integer pixel values in 0..100000; rescale them to 0..255 or 0..65535"),
        (np.array([[0.0, float("nan")]], np.float32), r"NaN or infinite pixel values"),
        (np.array([[0.0, 0.001]], np.float32), r"values in 0..0.001, blank once in 0..255"),
    ],
)
def test_unmappable_ranges_are_refused_in_one_line(tmp_path, array, message):
    with pytest.raises(ImageLoadError, match=message):
        load_image(array)
    if array.dtype == np.float32 and np.isfinite(array).all():  # the same as a float TIFF on disk names the file
        Image.fromarray(array).save(tmp_path / "bad.tif")
        with pytest.raises(ImageLoadError, match=rf"image '.*bad.tif' has .*{message}"):
            load_image(tmp_path / "bad.tif")


def test_sixteen_bit_range_still_scales_by_257(tmp_path):
    wide = np.array([[0, 1000, 32768, 65535]], np.int32)  # mode I beyond 8 bits: the 16-bit range
    Image.fromarray(wide).save(tmp_path / "wide.tif")
    assert [load_image(tmp_path / "wide.tif").getpixel((x, 0))[0] for x in range(4)] == [0, 4, 128, 255]


@pytest.mark.skipif(not (DEFAULT_MODEL / "config.json").is_file(), reason="no embedded model shipped")
def test_bundled_scene_in_numeric_modes_gives_the_same_detections(tmp_path):
    detector = Detector.from_pretrained(DEFAULT_MODEL)
    queries = ["circle", "star", "square", "triangle"]
    scene = Image.open(SCENE).convert("RGB")
    grey = np.asarray(scene.convert("L"))
    want = detector.detect(scene.convert("L"), queries)[0]
    assert want  # a scene with no detection would prove nothing
    for name, source in _numeric_files(tmp_path, grey).items():
        got = detector.detect(source, queries)[0]
        assert sorted(d.query for d in got) == sorted(d.query for d in want), name  # same count, same labels
        assert sorted(d.score for d in got) == pytest.approx(sorted(d.score for d in want), abs=2e-3), name
    colour = detector.detect(scene, queries)[0]
    floats = detector.detect(np.asarray(scene).astype(np.float32) / 255, queries)[0]  # an RGB float array 0..1
    assert sorted(d.query for d in floats) == sorted(d.query for d in colour)
