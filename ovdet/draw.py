"""Draw detections on an image: one colour per query, label and score on each box, labels never on top
of each other."""

from __future__ import annotations

from PIL import Image, ImageDraw, ImageFont

from ovdet.models.detection import Detection

_PALETTE = [
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
    (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 190), (0, 128, 128), (170, 110, 40),
]


def draw_detections(image: Image.Image, detections: list[Detection], banner: str | None = None) -> Image.Image:
    """Return a copy of `image` with labelled boxes (and an optional banner line at the top).

    Boxes are drawn lowest score first, so the best box is on top; labels are placed best score first,
    each at the first free spot (above the box, inside its top, below it, ...) that no earlier label covers.
    """
    out = image.convert("RGB").copy()
    draw = ImageDraw.Draw(out)
    font = ImageFont.load_default()
    width = max(1, round(max(out.size) / 300))
    for det in sorted(detections, key=lambda d: d.score):
        draw.rectangle(list(det.box), outline=_colour(det), width=width)
    placed: list[tuple[float, float, float, float]] = []
    for det in sorted(detections, key=lambda d: -d.score):
        text = f"{det.query} {det.score:.2f}"
        tx0, ty0, tx1, ty1 = draw.textbbox((0, 0), text, font=font)
        rect = label_rect(det.box, (tx1 - tx0 + 4, ty1 - ty0 + 2), out.size, placed)
        placed.append(rect)
        draw.rectangle(rect, fill=_colour(det))
        draw.text((rect[0] + 2, rect[1] - ty0), text, fill=(0, 0, 0), font=font)
    if banner:
        tx0, ty0, tx1, ty1 = draw.textbbox((0, 0), banner, font=font)
        draw.rectangle([0, 0, tx1 + 6, ty1 + 4], fill=(0, 0, 0))
        draw.text((3, 2), banner, fill=(255, 80, 80), font=font)
    return out


def label_rect(box, size: tuple[float, float], image_size: tuple[int, int],
               placed: list[tuple[float, float, float, float]]) -> tuple[float, float, float, float]:
    """Where a label of `size` (w, h) goes for `box` (xyxy): the first candidate inside the image that
    overlaps no rectangle in `placed`; the first candidate when every one is taken."""
    x0, y0, x1, y1 = box
    w, h = size
    candidates = []
    for left in (x0, x1 - w):
        for top in (y0 - h, y0, y1, y1 - h):
            candidates.append(_clamp((left, top, left + w, top + h), image_size))
    for step in range(1, 8):  # then further below the box, one label height at a time
        candidates.append(_clamp((x0, y1 + step * h, x0 + w, y1 + (step + 1) * h), image_size))
    free = [r for r in candidates if not any(_overlap(r, p) for p in placed)]
    return (free or candidates)[0]


def _clamp(rect, image_size):
    x0, y0, x1, y1 = rect
    dx = max(0.0, -x0) - max(0.0, x1 - image_size[0])
    dy = max(0.0, -y0) - max(0.0, y1 - image_size[1])
    return (x0 + dx, y0 + dy, x1 + dx, y1 + dy)


def _overlap(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _colour(det: Detection):
    return _PALETTE[det.label % len(_PALETTE)]
