"""The demo's callbacks as plain functions: no browser and no gradio needed to run or test them.

A run keeps the model's outputs for the image (`DetectionState`), so moving the threshold, NMS or
maximum-detections slider re-filters those outputs instead of running the model again.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageOps

from ovdet.draw import draw_detections
from ovdet.image_io import load_image, original_size
from ovdet.models.detection import UNTRAINED_BANNER, Detection, image_record, to_detections
from ovdet.models.detector import Detector
from ovdet.models.exemplar import validate_box
from ovdet.pipeline import make_postprocess as pipeline_postprocess
from ovdet.pipeline import predict_images, prepare_queries
from ovdet.postprocess import PostProcess

# Decoded images above this are refused (the upload cap bounds bytes, this bounds pixels).
MAX_PIXELS = 40_000_000
# Queries (and, separately, negatives) one request may give: each costs a text-tower pass and a
# column of the score matrix; a larger vocabulary belongs in `ovdet detect`.
MAX_QUERIES = 100
# An absolute path (POSIX or Windows) inside an error message: never shown to a page user.
_PATH = re.compile(r"""(?<![\w/.])['"]?(?:[A-Za-z]:\\|/)[^\s'"]*['"]?""")
TABLE_HEADERS = ["query", "score", "x1", "y1", "x2", "y2"]
# What a run keeps of the model outputs: enough to re-filter, not the region embeddings.
_KEPT_OUTPUTS = ("pred_boxes", "logits", "negative_veto")
# Crop re-scoring takes a softmax over the queries (and the model's reference names, if any):
# with one query and nothing else competing, every box wins it.
ONE_QUERY_NOTE = ("one query with CLIP re-scoring ranks boxes by objectness alone: add the other things in "
                  "the image as queries or negatives to tell them apart")


@dataclass
class DetectionState:
    """The last run's model outputs for one image, so a changed threshold re-filters without a forward pass."""

    model: str  # the model's name in the picker
    outputs: dict[str, torch.Tensor]  # `pred_boxes` [1, P, 4], `logits` [1, P, Q] (, `negative_veto` [1, P, Q])
    size: tuple[int, int]  # the image's (width, height)
    labels: list[str]  # the queries, then "exemplar i"
    untrained: bool
    seconds: float  # time the model took
    note: str = ""  # a caveat shown with the results
    to_original: object = None  # the model's box geometry (ImagePreprocessor.to_original), for re-filtering


def parse_queries(text: str | None, what: str = "queries") -> list[str]:
    """Free text -> queries: one per line or comma separated; blanks and repeats dropped, order kept.
    More than MAX_QUERIES is refused, naming the cap (`what` names the field in the message)."""
    if not isinstance(text, (str, type(None))):
        raise ValueError(f"the {what} must be text, got {type(text).__name__}")
    parts = (p.strip() for p in re.split(r"[\n,]", text or ""))
    queries = list(dict.fromkeys(p for p in parts if p))
    if len(queries) > MAX_QUERIES:
        raise ValueError(f"{len(queries)} {what} given; the demo takes at most {MAX_QUERIES} per request "
                         "(for a large vocabulary use `ovdet detect -q ...`)")
    return queries


def parse_box(text: str | None) -> tuple[float, float, float, float] | None:
    """'x1,y1,x2,y2' (pixels) -> a box, or None when blank."""
    if not text or not text.strip():
        return None
    try:
        x1, y1, x2, y2 = (float(v) for v in text.replace(" ", "").split(","))
    except ValueError:
        raise ValueError(f"exemplar box {text!r} is not x1,y1,x2,y2 in pixels, e.g. 40,56,137,152") from None
    return x1, y1, x2, y2


def box_from_clicks(clicks: list[tuple[float, float]], point: tuple[float, float]) -> tuple[list, str]:
    """Two clicks on the image make an exemplar box: returns (clicks so far, box text, '' until complete)."""
    clicks = [*clicks, (float(point[0]), float(point[1]))][-2:]
    if len(clicks) < 2:
        return clicks, ""
    (ax, ay), (bx, by) = clicks
    return [], f"{min(ax, bx):g},{min(ay, by):g},{max(ax, bx):g},{max(ay, by):g}"


def check_image(image, what: str = "image") -> Image.Image:
    """An image from the browser (PIL or array) as RGB; a path or anything else is refused, never opened.

    An upload arrives as a PIL image opened lazily (only its header read): its pixel count is
    checked before anything is decoded, then it is decoded with its EXIF orientation applied.
    Every failure is a ValueError of one line that names no server path.
    """
    if image is None:
        raise ValueError(f"no {what}: upload one, paste one, use the webcam or pick an example scene")
    if not isinstance(image, (Image.Image, np.ndarray)):
        raise ValueError(f"the {what} must be image data, got {type(image).__name__}")
    width, height = image.size if isinstance(image, Image.Image) else (image.shape[1], image.shape[0])
    if width * height > MAX_PIXELS:
        raise ValueError(f"the {what} is {width}x{height}, over {MAX_PIXELS} pixels; downscale it first")
    try:
        if isinstance(image, Image.Image) and image.format is not None:  # still a file: decode it now
            image = ImageOps.exif_transpose(image)  # boxes in the frame people see, as `ovdet detect`
        return load_image(image)
    except MemoryError:
        raise ValueError(f"the {what} ({width}x{height}) does not fit in the server's memory") from None
    except Exception as err:  # PIL's decoders raise many types on broken files
        raise ValueError(f"the {what} cannot be decoded ({plain_message(err)}); "
                         "give a PNG, JPEG, WebP, GIF, BMP or TIFF image") from None


def plain_message(err: BaseException, with_type: bool = True) -> str:
    """`Type: message` (or the message alone) on one line, absolute paths replaced: safe to show to
    a page user."""
    text = _PATH.sub("<file>", " ".join(str(err).split()))[:400]
    if not text:
        return type(err).__name__
    return f"{type(err).__name__}: {text}" if with_type else text


def mark_exemplar(image, clicks: list[tuple[float, float]], box_text: str | None) -> Image.Image:
    """The image with the exemplar so far: a cross at a first click, the box once it is complete."""
    out = check_image(image).copy()
    draw = ImageDraw.Draw(out)
    width = max(2, round(max(out.size) / 200))
    colour = (255, 0, 255)
    for x, y in clicks:
        arm = 3 * width
        draw.line([x - arm, y, x + arm, y], fill=colour, width=width)
        draw.line([x, y - arm, x, y + arm], fill=colour, width=width)
    box = parse_box(box_text) if not clicks else None
    if box is not None:
        draw.rectangle(box, outline=colour, width=width)
        draw.text((box[0] + width, box[1] + width), "exemplar 1", fill=colour)
    return out


def run_detection(
    detector: Detector,
    model_name: str,
    image,
    queries_text: str,
    negatives_text: str = "",
    exemplar_box: str | None = None,
    exemplar_crop=None,
    threshold: float = 0.6,
    nms: float = 0.5,
    max_detections: int = 100,
) -> tuple[DetectionState, list[Detection]]:
    """Run the model once on an image and return its state and detections.

    Args:
        queries_text / negatives_text: free text, one query per line or comma separated.
        exemplar_box: 'x1,y1,x2,y2' on the image: the object in it becomes the query "exemplar 1".
        exemplar_crop: an image whose whole extent is one more exemplar.
        threshold / nms / max_detections: the postprocess knobs (nms >= 1 turns NMS off).
    """
    image = check_image(image)
    queries, negatives = parse_queries(queries_text), parse_queries(negatives_text)
    exemplars = []
    box = parse_box(exemplar_box)
    if box is not None:
        exemplars.append((image, validate_box(box, image.size)))
    if exemplar_crop is not None:
        crop = check_image(exemplar_crop, "exemplar crop")
        exemplars.append((crop, (0, 0, *crop.size)))
    if not queries and not exemplars:
        raise ValueError("no queries: type at least one (e.g. 'star, red circle') or give an image exemplar")
    make_postprocess(threshold, nms, max_detections)  # bad knobs fail before the model runs
    start = time.perf_counter()
    prepared = prepare_queries(detector, queries, negatives=negatives, exemplars=exemplars)  # as `ovdet detect`
    out = predict_images(detector, [image], prepared)
    kept = {k: out[k].detach().cpu() for k in _KEPT_OUTPUTS if k in out}
    seconds = time.perf_counter() - start
    labels = prepared.labels
    alone = detector.rescorer is not None and len(labels) == 1 and not detector.rescorer.competitors(labels)
    note = ONE_QUERY_NOTE if alone else ""  # reference names, when the model has them, compete instead
    state = DetectionState(model_name, kept, original_size(image), labels, detector.untrained, seconds, note,
                           detector.preprocessor.to_original)
    return state, refilter(state, threshold, nms, max_detections)


def refilter(state: DetectionState, threshold: float, nms: float, max_detections: int) -> list[Detection]:
    """New postprocess knobs on the kept outputs: no forward pass."""
    postprocess = make_postprocess(threshold, nms, max_detections)
    return to_detections(state.outputs, [state.size], state.labels, postprocess, state.to_original)[0]


def make_postprocess(threshold: float, nms: float, max_detections: int) -> PostProcess:
    """The sliders -> PostProcess; NMS IoU 1 means no NMS, as in `ovdet detect --nms 1`."""
    return pipeline_postprocess(float(threshold), float(nms), int(max_detections))


def draw(image, detections: list[Detection], untrained: bool = False) -> Image.Image:
    """The image with coloured, labelled boxes (one colour per query)."""
    return draw_detections(load_image(image), detections, UNTRAINED_BANNER if untrained else None)


def table_rows(detections: list[Detection]) -> list[list]:
    """Rows for the results table, in TABLE_HEADERS order."""
    return [[d.query, round(d.score, 3), *(round(v, 1) for v in d.box)] for d in detections]


def to_json(state: DetectionState, detections: list[Detection], source: str = "upload") -> list[dict]:
    """The detections as `ovdet detect --out` writes them: a list with one record per image."""
    return [image_record(source, state.size, state.model, state.untrained, detections)]


def summary(state: DetectionState, detections: list[Detection], refilter_seconds: float | None = None) -> str:
    """One line for the page: how many detections and the time taken."""
    line = f"{len(detections)} detections · model {state.seconds:.2f} s"
    if refilter_seconds is not None:
        line += f" · re-filtered in {refilter_seconds * 1000:.0f} ms without re-running the model"
    return f"{line}\n\nNote: {state.note}" if state.note else line
