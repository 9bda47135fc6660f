"""Draw detections on an image: one colour per query, label and score on each box."""

from __future__ import annotations

from PIL import Image, ImageDraw, ImageFont

from ovdet.models.detection import Detection

_PALETTE = [
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
    (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 190), (0, 128, 128), (170, 110, 40),
]


def draw_detections(image: Image.Image, detections: list[Detection], banner: str | None = None) -> Image.Image:
    """Return a copy of `image` with labelled boxes (and an optional banner line at the top)."""
    out = image.convert("RGB").copy()
    draw = ImageDraw.Draw(out)
    font = ImageFont.load_default()
    width = max(1, round(max(out.size) / 300))
    for det in sorted(detections, key=lambda d: d.score):
        colour = _PALETTE[det.label % len(_PALETTE)]
        x0, y0, x1, y1 = det.box
        draw.rectangle([x0, y0, x1, y1], outline=colour, width=width)
        text = f"{det.query} {det.score:.2f}"
        tx0, ty0, tx1, ty1 = draw.textbbox((x0, y0), text, font=font)
        ty = max(0, y0 - (ty1 - ty0) - 2)
        draw.rectangle([x0, ty, x0 + (tx1 - tx0) + 4, ty + (ty1 - ty0) + 2], fill=colour)
        draw.text((x0 + 2, ty), text, fill=(0, 0, 0), font=font)
    if banner:
        tx0, ty0, tx1, ty1 = draw.textbbox((0, 0), banner, font=font)
        draw.rectangle([0, 0, tx1 + 6, ty1 + 4], fill=(0, 0, 0))
        draw.text((3, 2), banner, fill=(255, 80, 80), font=font)
    return out
