"""The end-user detection pipeline: load, batch, preprocess, score, postprocess, detections.

`ovdet detect`, the demo and `Detector.detect` all run through here, so they return the same
detections for the same inputs. Images are decoded one batch at a time (2,000 photos never sit
in memory at once).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch

from ovdet.errors import ImageLoadError, OvdetError
from ovdet.image_io import load_image, original_size
from ovdet.models.detection import Detection, to_detections
from ovdet.models.exemplar import exemplar_labels
from ovdet.models.scoring import QueryBank, build_query_bank, score
from ovdet.models.text_encoder import validate_queries
from ovdet.option_values import check_count, check_iou, check_score
from ovdet.postprocess import PostProcess

POSTPROCESS_MODES = ("ovdet", "hf", "pipeline")


@dataclass
class PreparedQueries:
    """Queries checked and embedded once for a whole run: the bank and the name of each label."""

    bank: QueryBank
    labels: list[str]  # the queries, then "exemplar 1", "exemplar 2", ...


def prepare_queries(detector, queries, templates=None, template_mode: str = "embed", negatives=None,
                    exemplars=None) -> PreparedQueries:
    """Check queries and negatives, embed exemplars [(image, (x1, y1, x2, y2)), ...] and texts."""
    queries = validate_queries(queries) if queries or not exemplars else []
    negatives = validate_queries(negatives) if negatives else []
    if any(m.training for m in detector.modules()):  # eval() walks ~250 modules: 2 ms of a 15 ms call
        detector.eval()
    exemplar_embeds = detector.encode_exemplars(exemplars) if exemplars else None
    bank = build_query_bank(detector, queries, templates, template_mode, exemplar_embeds, negatives)
    return PreparedQueries(bank, queries + exemplar_labels(len(exemplars or [])))


def make_postprocess(threshold: float, nms: float | None = 0.5, max_detections: int = 100,
                     agnostic_nms: bool = False, mode: str = "ovdet",
                     query_thresholds: list[float] | None = None) -> PostProcess:
    """The knobs -> PostProcess. `nms` None or 1: no NMS. Mode "hf": transformers' own
    `post_process_object_detection` (one label per region, no NMS, boxes not clipped); "pipeline": the
    `zero-shot-object-detection` pipeline's (every region-query pair, otherwise as "hf")."""
    if mode not in POSTPROCESS_MODES:
        raise OvdetError(f"postprocess must be one of {POSTPROCESS_MODES}, got {mode!r}")
    nms = None if nms is None else check_iou("nms", nms)
    if mode in ("hf", "pipeline"):
        return PostProcess(score_threshold=threshold, nms_threshold=None, max_detections=max_detections,
                           hf_compatible=True, one_label_per_region=mode == "hf")
    nms = None if nms is None or nms >= 1 else nms
    return PostProcess(score_threshold=threshold, nms_threshold=nms, max_detections=max_detections,
                       class_agnostic=agnostic_nms, query_thresholds=query_thresholds)


@torch.inference_mode()
def predict_images(detector, images: list, prepared: PreparedQueries) -> dict[str, torch.Tensor]:
    """RGB PIL images -> the model outputs for the prepared queries (one forward pass)."""
    pixels = detector.preprocessor.to_model(images).to(detector.device)  # [B, 3, S, S]
    return score(detector, pixels, prepared.bank)


def detect(detector, images, queries: list[str], **options) -> list[list[Detection] | None]:
    """Detect free-text queries in images (paths, PIL images or numpy arrays, or one of them).

    Returns, per image, detections sorted by score with boxes in original pixels (None for an image
    that `on_error` was told of). `options`: those of `detect_stream`.
    """
    if not isinstance(images, (list, tuple)):
        images = [images]
    results: list[list[Detection] | None] = [None] * len(images)
    for item in detect_stream(detector, images, queries, **options):
        results[item.index] = item.detections
    return results


@dataclass
class ImageResult:
    index: int  # position in the input list
    image: object  # the decoded RGB PIL image (for drawing)
    size: tuple[int, int]  # (width, height) of the file, the frame detections are in
    detections: list[Detection]


def detect_stream(
    detector,
    images: list,
    queries: list[str],
    threshold: float | None = None,
    nms: float | None = 0.5,
    max_detections: int = 100,
    templates=None,
    template_mode: str = "embed",
    batch_size: int = 8,
    negatives: list[str] | None = None,
    exemplars: list[tuple] | None = None,
    agnostic_nms: bool = False,
    postprocess: str = "ovdet",
    on_error: Callable[[int, ImageLoadError], None] | None = None,
    query_thresholds: list[float] | None = None,
) -> Iterable[ImageResult]:
    """Yield one `ImageResult` per readable image, decoding a batch at a time.

    threshold: None uses the model's own (`threshold` in its config.json).
    exemplars: (image, (x1, y1, x2, y2) pixels) pairs, each one more query, named "exemplar i"
        (queries may then be empty). negatives: texts that drop a detection whose region matches
        them at least as well as its own query.
    postprocess: "ovdet" (every region-query pair, NMS) or "hf" (transformers' one label per region).
    on_error: called with (index, error) for an image that cannot be read, which is skipped;
        without it the first bad image raises.
    query_thresholds: each query's own minimum score, applied before NMS (`PostProcess`).
    """
    batch_size = check_count("batch_size", batch_size)
    threshold = detector.threshold if threshold is None else check_score("threshold", threshold)
    post = make_postprocess(threshold, nms, max_detections, agnostic_nms, postprocess, query_thresholds)
    prepared = prepare_queries(detector, queries, templates, template_mode, negatives, exemplars)
    for indices, batch in _batches(images, batch_size, on_error):
        out = predict_images(detector, batch, prepared)
        sizes = [original_size(im) for im in batch]  # the file's pixels
        per_image = to_detections(out, sizes, prepared.labels, post, detector.preprocessor.to_original)
        for i, image, size, dets in zip(indices, batch, sizes, per_image):
            yield ImageResult(i, image, size, dets)


def _batches(images: list, batch_size: int, on_error) -> Iterable[tuple[list[int], list]]:
    """Decode `batch_size` readable images at a time: ([indices], [RGB images])."""
    indices, batch = [], []
    for i, image in enumerate(images):
        try:
            pil = load_image(image)
        except ImageLoadError as err:
            if on_error is None:
                raise
            on_error(i, err)
            continue
        indices.append(i)
        batch.append(pil)
        if len(batch) == batch_size:
            yield indices, batch
            indices, batch = [], []
    if batch:
        yield indices, batch
