"""torchvision.ops' box functions for the inference path, reached without importing the `torchvision` package.

Why: `import torchvision` imports `torchvision.ops.roi_align`, which imports `torch._dynamo` (1.2-1.8 s on a 2-core
CPU, half of `ovdet detect`'s start-up). The kernels live in torchvision's compiled library, which loads in
milliseconds: `nms` and `roi_align` below are `torch.ops.torchvision.*` called as `torchvision.ops` calls them, and
the few lines around them (class offsets for `batched_nms`, box formats) follow torchvision's code. Where the
library cannot be loaded on its own, or torchvision is already imported, torchvision.ops itself answers. Tests
compare every function with torchvision.ops. Tracing for export needs torchvision's fake kernels:
`ensure_torchvision()` imports the package there.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
from functools import lru_cache
from pathlib import Path

import torch

BATCHED_NMS_LOOP_NUMEL = {"cpu": 4000}  # torchvision: above this many box values, NMS per class (else 100,000)
FORMATS = ("xyxy", "xywh", "cxcywh")


@lru_cache(maxsize=1)
def kernels_loaded() -> bool:
    """True once `torch.ops.torchvision` has its kernels: torchvision's own import loaded them, or its compiled
    library was loaded here; False when only importing torchvision will do."""
    if "torchvision" in sys.modules:
        return False
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return False
    folder = Path(list(spec.submodule_search_locations)[0])
    for stem in ("_C_stable", "_C"):  # the names torchvision's extension.py tries
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            library = folder / f"{stem}{suffix}"
            if library.is_file():
                try:
                    torch.ops.load_library(str(library))
                    torch.ops.torchvision.nms  # noqa: B018  (raises when the library registered no ops)
                except (OSError, RuntimeError, AttributeError):
                    return False
                return True
    return False


def ensure_torchvision():
    """torchvision.ops, imported (its fake kernels are what tracing a graph with its ops needs)."""
    import torchvision.ops

    return torchvision.ops


def nms(boxes_xyxy: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """torchvision.ops.nms: indices kept, by decreasing score."""
    if not kernels_loaded():
        return ensure_torchvision().nms(boxes_xyxy, scores, iou_threshold)
    return torch.ops.torchvision.nms(boxes_xyxy, scores, float(iou_threshold))


def batched_nms(boxes_xyxy: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """torchvision.ops.batched_nms: NMS within each class (`idxs`), kept indices by decreasing score."""
    if not kernels_loaded():
        return ensure_torchvision().batched_nms(boxes_xyxy, scores, idxs, iou_threshold)
    if boxes_xyxy.numel() > BATCHED_NMS_LOOP_NUMEL.get(boxes_xyxy.device.type, 100_000):
        keep = torch.zeros_like(scores, dtype=torch.bool)  # [N]: one NMS per class, as torchvision does here
        for label in torch.unique(idxs):
            rows = torch.where(idxs == label)[0]
            keep[rows[nms(boxes_xyxy[rows], scores[rows], iou_threshold)]] = True
        kept = torch.where(keep)[0]
        return kept[scores[kept].sort(descending=True)[1]]
    if boxes_xyxy.numel() == 0:
        return torch.empty((0,), dtype=torch.int64, device=boxes_xyxy.device)
    offsets = idxs.to(boxes_xyxy) * (boxes_xyxy.max() + torch.tensor(1).to(boxes_xyxy))  # [N]: classes never overlap
    return nms(boxes_xyxy + offsets[:, None], scores, iou_threshold)


def remove_small_boxes(boxes_xyxy: torch.Tensor, min_size: float) -> torch.Tensor:
    """torchvision.ops.remove_small_boxes: indices of the boxes whose sides are both at least `min_size`."""
    widths = boxes_xyxy[:, 2] - boxes_xyxy[:, 0]
    heights = boxes_xyxy[:, 3] - boxes_xyxy[:, 1]
    return torch.where((widths >= min_size) & (heights >= min_size))[0]


def box_convert(boxes: torch.Tensor, in_fmt: str, out_fmt: str) -> torch.Tensor:
    """torchvision.ops.box_convert for "xyxy", "xywh" and "cxcywh": [..., 4] -> [..., 4]."""
    for fmt in (in_fmt, out_fmt):
        if fmt not in FORMATS:
            raise ValueError(f"box format {fmt!r} is not one of {FORMATS}")
    if in_fmt == out_fmt:
        return boxes.clone()
    a, b, c, d = boxes.unbind(-1)
    if in_fmt == "xywh":
        a, b, c, d = a, b, a + c, b + d
    elif in_fmt == "cxcywh":
        a, b, c, d = a - 0.5 * c, b - 0.5 * d, a + 0.5 * c, b + 0.5 * d
    if out_fmt == "xywh":
        return torch.stack((a, b, c - a, d - b), dim=-1)
    if out_fmt == "cxcywh":
        return torch.stack(((a + c) / 2, (b + d) / 2, c - a, d - b), dim=-1)
    return torch.stack((a, b, c, d), dim=-1)


def box_iou(boxes1_xyxy: torch.Tensor, boxes2_xyxy: torch.Tensor) -> torch.Tensor:
    """torchvision.ops.box_iou: [N, 4] and [M, 4] xyxy -> [N, M] IoU."""
    area1 = (boxes1_xyxy[:, 2] - boxes1_xyxy[:, 0]) * (boxes1_xyxy[:, 3] - boxes1_xyxy[:, 1])  # [N]
    area2 = (boxes2_xyxy[:, 2] - boxes2_xyxy[:, 0]) * (boxes2_xyxy[:, 3] - boxes2_xyxy[:, 1])  # [M]
    lt = torch.max(boxes1_xyxy[:, None, :2], boxes2_xyxy[None, :, :2])  # [N, M, 2]
    rb = torch.min(boxes1_xyxy[:, None, 2:], boxes2_xyxy[None, :, 2:])  # [N, M, 2]
    wh = rb - lt
    wh = (wh if wh.dtype in (torch.float32, torch.float64) or not wh.is_floating_point() else wh.float()).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]  # [N, M]
    return inter / (area1[:, None] + area2[None, :] - inter)


def roi_align(features: torch.Tensor, rois: torch.Tensor, output_size: tuple[int, int], spatial_scale: float = 1.0,
              sampling_ratio: int = -1, aligned: bool = False) -> torch.Tensor:
    """torchvision.ops.roi_align with the boxes as one [K, 5] tensor (image index, x0, y0, x1, y1): [N, C, H, W] ->
    [K, C, h, w]."""
    if not isinstance(rois, torch.Tensor) or rois.dim() != 2 or rois.shape[1] != 5:
        raise ValueError(f"rois must be a [K, 5] tensor (image index, x0, y0, x1, y1), got {getattr(rois, 'shape', rois)}")
    tracing = torch.jit.is_tracing() or torch.compiler.is_compiling() or torch.compiler.is_exporting()
    if tracing or features.is_quantized or not kernels_loaded():
        return ensure_torchvision().roi_align(features, rois, output_size, spatial_scale, sampling_ratio, aligned)
    h, w = output_size
    return torch.ops.torchvision.roi_align(features, rois, float(spatial_scale), int(h), int(w), int(sampling_ratio),
                                           bool(aligned))
