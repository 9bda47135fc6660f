"""Image exemplars as queries (one-shot detection): a box drawn on an image becomes a query embedding.

Both kinds of exemplar embedding are L2-normalised and live in the text-embedding space, so they
mix with text queries:
- with crop re-scoring, queries are compared with CLIP crop embeddings, so the exemplar is CLIP's
  embedding of its own crop, taken by the re-scorer itself (`CropRescorer.crop_embeddings`);
- without, it is the head's region embedding of the best region inside the box (OWL-ViT's
  image-conditioned detection): among the regions whose predicted box overlaps the drawn box
  best, the most object-like one; a head with no objectness (OWL-ViT v1) takes OWL-ViT's own
  rule, the candidate least like the image's mean region embedding.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ovdet.box_ops import box_convert, box_iou
from ovdet.errors import OvdetError
from ovdet.image_io import load_image, original_size

EXEMPLAR_LABEL = "exemplar {}"
# OWL-ViT keeps every region within 80 % of the best IoU with the query box as a candidate.
IOU_TOLERANCE = 0.8


def exemplar_labels(count: int) -> list[str]:
    """Names under which exemplar queries are reported: "exemplar 1", "exemplar 2", ..."""
    return [EXEMPLAR_LABEL.format(i + 1) for i in range(count)]


def validate_box(box, size: tuple[int, int]) -> tuple[float, float, float, float]:
    """An exemplar box (x1, y1, x2, y2 in pixels) clipped to its image (width, height); OvdetError if empty.

    Only a box with no area inside the image is refused: a detection's box may run into the padding
    (OWL's post-processing does not clip), and the sliver left inside it still picks a region.
    """
    try:
        x1, y1, x2, y2 = (float(v) for v in box)
    except (TypeError, ValueError):
        raise OvdetError(f"an exemplar box must be 4 numbers x1,y1,x2,y2 in pixels, got {box!r}") from None
    if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
        raise OvdetError(f"exemplar box {tuple(box)} has a NaN or infinite corner; give 4 finite pixel coordinates")
    width, height = size
    x1, x2 = max(0.0, min(x1, width)), max(0.0, min(x2, width))  # clipped first, then judged
    y1, y2 = max(0.0, min(y1, height)), max(0.0, min(y2, height))
    if not (x2 > x1 and y2 > y1):
        raise OvdetError(
            f"exemplar box {tuple(box)} is empty inside the {width}x{height} image; give x1 < x2 and y1 < y2 in pixels"
        )
    return x1, y1, x2, y2


def region_embedding(outputs: dict[str, torch.Tensor], box_xyxy: torch.Tensor, has_objectness: bool = True) -> torch.Tensor:
    """The head's embedding of the best region for a drawn box (OWL-ViT style).

    Args:
        outputs: the model output contract for one image (`pred_boxes` [1, P, 4], `objectness`
            [1, P], `region_embeds` [1, P, E]).
        box_xyxy: [4] the drawn box in 0..1 of the padded square.
    Returns:
        [E] L2-normalised.
    """
    boxes = box_convert(outputs["pred_boxes"][0].float(), "cxcywh", "xyxy")  # [P, 4]
    iou = box_iou(boxes, box_xyxy.float()[None].to(boxes.device))[:, 0]  # [P]
    candidates = iou >= IOU_TOLERANCE * iou.max()  # [P]
    embeds = outputs["region_embeds"][0].float()  # [P, E]
    if has_objectness:
        rank = outputs["objectness"][0].float()  # [P]
    else:  # OWL-ViT's `embed_image_query`: the candidate least similar to the mean embedding
        rank = -(embeds @ embeds.mean(0))  # [P]
    best = int(rank.masked_fill(~candidates, float("-inf")).argmax())
    return F.normalize(embeds[best], dim=-1)  # [E]


@torch.inference_mode()
def encode_exemplars(detector, exemplars) -> torch.Tensor:
    """Image exemplars -> query embeddings (the Detector's `encode_exemplars`).

    Args:
        detector: an `ovdet.models.detector.Detector`.
        exemplars: X pairs (image, (x1, y1, x2, y2)): a path, PIL image or array, and a box in its pixels.
    Returns:
        [X, E] L2-normalised, in the text-embedding space.
    """
    checked = []
    for item in exemplars:  # every exemplar checked before any forward pass
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise OvdetError(f"an exemplar is a pair (image, (x1, y1, x2, y2)), got a {type(item).__name__}")
        pil = load_image(item[0])
        size = original_size(pil)  # boxes are given in the file's pixels, like detections
        box = detector.preprocessor.to_normalized(torch.tensor(validate_box(item[1], size))[None], size)[0]  # [4] 0..1
        checked.append((pil, box))
    embeds = []
    for pil, box in checked:
        pixels = detector.preprocessor.to_model([pil]).to(detector.device)  # [1, 3, S, S]
        if detector.rescorer is not None:
            cxcywh = box_convert(box.float()[None, None], "xyxy", "cxcywh")  # [1, 1, 4]
            embeds.append(detector.rescorer.region_embeddings(detector.backbone, pixels, cxcywh)[0, 0])  # [E]
        else:
            no_query = torch.zeros(1, detector.text_encoder.embed_dim, device=detector.device)  # forward wants one
            has_objectness = detector.head.objectness_mlp is not None
            embeds.append(region_embedding(detector(pixels, no_query), box, has_objectness))
    return torch.stack(embeds) if embeds else torch.zeros(0, detector.text_encoder.embed_dim)  # [X, E]
