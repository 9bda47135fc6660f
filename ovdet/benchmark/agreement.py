"""Does bf16 change the answers? The same model evaluated in fp32 and in bf16 on one dataset, AP50 side by side."""

from __future__ import annotations

import time
from pathlib import Path

METRICS = ("AP50_all", "AP50_novel", "AP50_base", "AP")
MAX_AP50_GAP = 0.5  # points: the bound on |AP50(bf16) - AP50(fp32)|
MAX_AP50_GAP_INT8 = 1.0  # points: issue J's bound on |AP50(int8) - AP50(fp32)|, novel and base


def precision_agreement(
    model: str | Path,
    annotations: str | Path,
    images: str | Path,
    precisions: tuple[str, ...] = ("fp32", "bf16"),
    batch_size: int = 8,
    workers: int = 2,
    limit: int | None = None,
) -> dict:
    """Evaluate `model` once per precision (forced, not "auto") and compare AP50 with the first.

    limit: evaluate the first N images only (a quick check); None uses them all.
    Returns {"metrics": {precision: {...}}, "seconds": {...}, "gap": {metric: bf16 - fp32}, "agree": bool}.
    """
    from ovdet.evaluation.evaluate import evaluate_model
    from ovdet.models.detector import Detector

    gt = _annotations(annotations, limit)
    metrics, seconds = {}, {}
    for precision in precisions:
        detector = Detector.from_pretrained(model).eval()
        detector.set_precision(precision)
        start = time.perf_counter()
        result = evaluate_model(detector, gt, images, batch_size=batch_size, workers=workers, accelerator="cpu",
                                progress=False)  # fmt: skip
        seconds[precision] = time.perf_counter() - start
        metrics[precision] = {k: result.metrics[k] for k in METRICS if k in result.metrics}
    ref = metrics[precisions[0]]
    gaps = {p: {k: v - ref[k] for k, v in m.items() if k in ref} for p, m in metrics.items() if p != precisions[0]}
    worst = max((abs(g[k]) for g in gaps.values() for k in g if k.startswith("AP50")), default=0.0)
    bound = MAX_AP50_GAP_INT8 if "int8" in precisions else MAX_AP50_GAP
    return {"model": str(model), "images": len(gt["images"]), "metrics": metrics, "seconds": seconds,
            "gap": gaps, "max_abs_AP50_gap": worst, "bound": bound, "agree": worst <= bound}  # fmt: skip


def _annotations(path: str | Path, limit: int | None) -> dict:
    """The COCO json, cut to its first `limit` images (with their boxes) when asked."""
    import json

    gt = json.loads(Path(path).read_text())
    if limit is not None:
        gt["images"] = gt["images"][:limit]
        kept = {img["id"] for img in gt["images"]}
        gt["annotations"] = [a for a in gt["annotations"] if a["image_id"] in kept]
    return gt
