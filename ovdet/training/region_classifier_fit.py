"""Fit a one-pass detector's `RegionClassifier` on base-annotated images (F-VLM's detector score).

The detector proposes as it always does; each of its top regions that overlaps an annotated box (IoU >= 0.5),
and each annotated box itself, is pooled through the tower's last stage, and the classifier learns to put
that map next to its name's text embedding (cross-entropy over the annotated names at CLIP's temperature).
Only the names the annotations hold are ever targets. With a teacher CLIP, every top region (annotated or
not, novel shapes included) also learns the teacher's embedding of its context crop (1 - cos, CLIPSelf's
label-free target), so the classifier can name what no annotation names. Maps are collected once and the fit
runs on them (a few seconds an epoch on a CPU), so no Lightning loop is needed here.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torchvision.ops import box_convert, box_iou

from ovdet.errors import OvdetError
from ovdet.models.region_classifier import RegionClassifier


def collect_region_maps(detector, annotations: Path, images: Path, iou: float = 0.5, limit: int | None = None,
                        batch_size: int = 8, progress: bool = True, teacher=None,
                        ) -> tuple[torch.Tensor, torch.Tensor, list[str], torch.Tensor | None]:
    """([N, C*h*w] fp16 pooled maps, [N] label index, names, [N, E] teacher crop embeddings or None) from the
    detector's top regions that overlap an annotated box by `iou` and the annotated boxes themselves. With a
    `teacher` (a tower with `encode_crops` and `crop_size`, e.g. `region_tower(load_clip(DIR))`, that takes the
    detector's input), every top region is kept, label -1 where no annotated box matches it, and each row gets
    the teacher's embedding of its context crop."""
    from PIL import Image
    from tqdm.auto import tqdm

    data = json.loads(Path(annotations).read_text(encoding="utf-8"))
    cats = {c["id"]: c["name"] for c in data.get("categories", [])}
    used = sorted({a["category_id"] for a in data.get("annotations", [])})
    if not used:
        raise OvdetError(f"'{annotations}' holds no annotated boxes; the classifier learns from them")
    names = [cats[c] for c in used]
    by_image: dict[int, list] = {}
    for a in data["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    entries = [im for im in data["images"] if im["id"] in by_image][:limit]
    scorer, backbone = detector.rescorer, detector.backbone
    maps, labels, crops = [], [], []
    query = detector.encode_queries(names)  # [N, E]: the head needs queries, their logits are not used
    with torch.inference_mode():
        for start in tqdm(range(0, len(entries), batch_size), desc="region maps", unit="batch", disable=not progress):
            batch = entries[start:start + batch_size]
            pils = [Image.open(Path(images) / im["file_name"]).convert("RGB") for im in batch]
            pixels = detector.preprocessor.to_model(pils).to(detector.device)  # [B, 3, S, S]
            out = detector(pixels, query, keep_region_map=True)
            top = out["objectness"].topk(min(scorer.topk, out["objectness"].shape[1]), dim=1).indices  # [B, K]
            boxes = torch.gather(out["pred_boxes"].float(), 1, top[..., None].expand(-1, -1, 4))  # [B, K, 4] cxcywh
            for i, im in enumerate(batch):
                anns = by_image[im["id"]]
                truth = torch.tensor([a["bbox"] for a in anns], dtype=torch.float32)  # [G, 4] xywh pixels
                truth = detector.preprocessor.to_normalized(box_convert(truth, "xywh", "xyxy"), (im["width"], im["height"]))
                label = torch.tensor([used.index(a["category_id"]) for a in anns])  # [G]
                overlap, match = box_iou(box_convert(boxes[i], "cxcywh", "xyxy"), truth).max(1)  # [K]
                hit = overlap >= iou if teacher is None else torch.ones_like(overlap, dtype=torch.bool)  # [K]
                chosen = torch.cat([boxes[i][hit], box_convert(truth, "xyxy", "cxcywh")])  # [M, 4]
                rois = scorer.pooled_rois(backbone, pixels[i:i + 1], chosen[None], out["region_map"][i:i + 1])
                maps.append(backbone.region_stage(rois).flatten(1).half().cpu())  # [M, C*h*w]
                matched = torch.where(overlap >= iou, label[match], -1)  # [K]
                labels.append(torch.cat([matched[hit], label]))
                if teacher is not None:
                    crops.append(scorer.crop_embeddings(teacher, pixels[i:i + 1], chosen[None])[0].half().cpu())
    return torch.cat(maps), torch.cat(labels), names, torch.cat(crops) if teacher is not None else None


def fit_region_classifier(maps: torch.Tensor, labels: torch.Tensor, text: torch.Tensor, logit_scale: float,
                          hidden: int = 512, epochs: int = 10, lr: float = 1e-3, weight_decay: float = 0.05,
                          batch_size: int = 256, seed: int = 0, progress: bool = True,
                          crops: torch.Tensor | None = None, crop_weight: float = 0.0) -> tuple[RegionClassifier, list[float]]:
    """A `RegionClassifier` fitted to maps [N, D] with labels [N] indexing text [L, E] (-1: no label); with
    `crops` [N, E] (teacher crop embeddings) the loss adds crop_weight * (1 - cos) on every row. Returns the
    classifier (eval mode) and the mean loss of each epoch."""
    from tqdm.auto import tqdm

    torch.manual_seed(seed)
    x = maps.float()
    net = RegionClassifier(x.shape[1], text.shape[1], hidden)
    net.mean.copy_(x.mean(0))
    net.std.copy_(x.std(0) + 1e-3)  # a constant feature must not divide by zero
    optimizer = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
    steps = epochs * -(-len(x) // batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    text = F.normalize(text.float(), dim=-1)
    target = F.normalize(crops.float(), dim=-1) if crops is not None and crop_weight > 0 else None  # [N, E]
    losses = []
    bar = tqdm(range(epochs), desc="fit", unit="epoch", disable=not progress)
    for _ in bar:
        net.train()
        order, total = torch.randperm(len(x)), 0.0
        for start in range(0, len(x), batch_size):
            i = order[start:start + batch_size]
            z, named = F.normalize(net(x[i]), dim=-1), labels[i] >= 0  # [b, E], [b]
            loss = F.cross_entropy(logit_scale * z[named] @ text.T, labels[i][named]) if named.any() else z.sum() * 0
            if target is not None:
                loss = loss + crop_weight * (1 - (z * target[i]).sum(-1)).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            total += float(loss.detach()) * len(i)
        losses.append(total / len(x))
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
    return net.eval(), losses
