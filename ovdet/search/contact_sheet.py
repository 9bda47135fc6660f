"""A contact sheet of search hits: each hit's box with a margin, its box drawn and its rank and score written."""

from __future__ import annotations

from PIL import Image

from ovdet.draw import draw_detections
from ovdet.image_io import load_image, original_size
from ovdet.models.detection import Detection
from ovdet.search.region_scorer import Hit

TILE = 160  # pixels per tile side
MARGIN = 0.25  # of the box size, added on every side of the crop
COLUMNS = 5


def contact_sheet(hits: list[Hit], tile: int = TILE, columns: int = COLUMNS) -> Image.Image:
    """One RGB image: a grid of tiles, best hit first; an image that cannot be read any more gives a grey tile."""
    rows = max(1, -(-len(hits) // columns))
    sheet = Image.new("RGB", (columns * tile, rows * tile), (40, 40, 40))
    for i, hit in enumerate(hits):
        sheet.paste(_tile(hit, i + 1, tile), ((i % columns) * tile, (i // columns) * tile))
    return sheet


def _tile(hit: Hit, rank: int, tile: int) -> Image.Image:
    try:
        image = load_image(hit.path)
    except ValueError:
        return Image.new("RGB", (tile, tile), (90, 90, 90))
    scale = image.width / original_size(image)[0]  # the file may have loaded downscaled
    x0, y0, x1, y1 = (v * scale for v in hit.box)
    pad = MARGIN * max(x1 - x0, y1 - y0)
    left, top = max(0, int(x0 - pad)), max(0, int(y0 - pad))
    right, bottom = min(image.width, int(x1 + pad) + 1), min(image.height, int(y1 + pad) + 1)
    crop = image.crop((left, top, right, bottom))
    factor = (tile - 4) / max(crop.size)
    crop = crop.resize((max(1, round(crop.width * factor)), max(1, round(crop.height * factor))))
    box = [(x0 - left) * factor, (y0 - top) * factor, (x1 - left) * factor, (y1 - top) * factor]
    drawn = draw_detections(crop, [Detection(box, hit.score, 0, f"#{rank}")])
    out = Image.new("RGB", (tile, tile), (40, 40, 40))
    out.paste(drawn, ((tile - drawn.width) // 2, (tile - drawn.height) // 2))
    return out
