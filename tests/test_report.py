"""The report writes a markdown table and non-empty PNG plots that name what was evaluated."""

import numpy as np

from ovdet.evaluation import run_coco_ov
from ovdet.evaluation.report import write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
NAMES = ["circle", "square", "triangle", "star"]


def make_eval():
    """A tiny COCO eval: 6 images, novel triangle/star, boxes jittered so curves are not trivial."""
    rng = np.random.default_rng(0)
    images = [{"id": i, "width": 100, "height": 100} for i in range(1, 7)]
    anns, preds = [], []
    for img in images:
        for c in range(1, 5):
            x, y = rng.uniform(0, 60, size=2)
            anns.append({"id": len(anns) + 1, "image_id": img["id"], "category_id": c,
                         "bbox": [x, y, 30.0, 30.0], "area": 900.0, "iscrowd": 0})  # fmt: skip
            shift = rng.uniform(0, 15)
            preds.append({"image_id": img["id"], "category_id": c, "bbox": [x + shift, y, 30.0, 30.0],
                          "score": float(rng.uniform())})  # fmt: skip
    gt = {"images": images, "annotations": anns, "categories": [{"id": i + 1, "name": n} for i, n in enumerate(NAMES)]}
    meta = {"templates": "clip7", "scoring": "mean_logits"}
    return run_coco_ov(gt, preds, split="triangle,star", meta=meta)


def test_report_writes_markdown_and_plots(tmp_path):
    result = make_eval()
    paths = write_report(result, tmp_path / "report")
    assert [p.name for p in paths] == ["report.md", "ap50_per_category.png", "pr_novel.png"]
    for png in paths[1:]:
        assert png.stat().st_size > 5000 and png.read_bytes()[:8] == PNG_MAGIC
    md = paths[0].read_text()
    for text in ("AP50_novel", "AP50_base", "clip7", "mean_logits", "| star | 4 | novel |", "pr_novel.png"):
        assert text in md
    assert f"| AP50_novel | {result.metrics['AP50_novel']:.1f} |" in md


def test_report_from_a_metrics_dict_skips_pr_curves(tmp_path):
    paths = write_report(make_eval().metrics, tmp_path)
    assert [p.name for p in paths] == ["report.md", "ap50_per_category.png"]
    assert "no PR curves" in paths[0].read_text()


def test_max_dets_is_listed_once_with_the_value_scoring_used(tmp_path):
    """A model run records what it kept per image; the report lists `max_dets` once: what COCOeval counted."""
    result = make_eval()
    result.metrics["meta"] = {**result.metrics["meta"], "max_dets": 300}  # as sidecars of earlier runs hold it
    md = write_report(result, tmp_path)[0].read_text()
    rows = [line for line in md.splitlines() if line.startswith("| max_dets |")]
    assert rows == ["| max_dets | 100 |"]


def test_every_report_file_carries_the_mark(tmp_path):
    from ovdet.file_mark import is_ours

    paths = write_report(make_eval(), tmp_path)
    assert all(is_ours(p) for p in paths), [p.name for p in paths if not is_ours(p)]
