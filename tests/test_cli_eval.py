"""`ovdet eval` and `tools/eval.py` end to end: metrics.json, predictions, report, saved-predictions mode, errors."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from ovdet.cli.main import main
from ovdet.models.detector import Detector

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
ROOT = Path(__file__).resolve().parents[1]
SHAPES = [("circle", "base"), ("square", "base"), ("triangle", "novel"), ("star", "novel")]
COCO_KEYS = {"AP50_novel", "AP50_base", "AP50_all", "AP", "per_category", "meta"}


def ovdet(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ovdet.cli.main", *args], capture_output=True, text=True, env=ENV,
                          timeout=600)  # fmt: skip


def gt_as_predictions(gt: dict) -> list[dict]:
    return [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
            for a in gt["annotations"]]  # fmt: skip


@pytest.fixture(scope="module")
def model_dir(tiny_clip_dir, tmp_path_factory):
    return Detector.from_clip(str(tiny_clip_dir), image_size=64).save_pretrained(tmp_path_factory.mktemp("m") / "det")


@pytest.fixture(scope="module")
def shapes_coco(tmp_path_factory):
    """Six PNGs of drawn shapes with a COCO json whose categories carry their own "split"."""
    root = tmp_path_factory.mktemp("shapes")
    rng = np.random.default_rng(0)
    cats = [{"id": i + 1, "name": n, "split": s} for i, (n, s) in enumerate(SHAPES)]
    images, anns = [], []
    for img_id in range(1, 7):
        w, h = (96, 64) if img_id % 2 else (64, 80)
        im = Image.new("RGB", (w, h), (240, 240, 240))
        draw = ImageDraw.Draw(im)
        for j in range(2):
            x, y = rng.uniform(0, w - 30), rng.uniform(0, h - 30)
            bw, bh = rng.uniform(12, 28, size=2)
            draw.rectangle([x, y, x + bw, y + bh], fill=tuple(int(v) for v in rng.integers(0, 200, 3)))
            box = [float(x), float(y), float(bw), float(bh)]
            anns.append({"id": len(anns) + 1, "image_id": img_id, "category_id": (img_id + j) % 4 + 1,
                         "bbox": box, "area": box[2] * box[3], "iscrowd": 0})  # fmt: skip
        im.save(root / f"{img_id:03d}.png")
        images.append({"id": img_id, "file_name": f"{img_id:03d}.png", "width": w, "height": h})
    gt = {"images": images, "annotations": anns, "categories": cats}
    (root / "gt.json").write_text(json.dumps(gt))
    return root, gt


def test_eval_with_model_writes_outputs_and_its_saved_predictions_agree(model_dir, shapes_coco, tmp_path):
    root, gt = shapes_coco
    preds, out, report = tmp_path / "preds.json", tmp_path / "metrics.json", tmp_path / "report"
    proc = ovdet("eval", "--model", str(model_dir), "--annotations", str(root / "gt.json"), "--images", str(root),
                 "--templates", "clip7", "--template-mode", "logit", "--max-dets", "50", "--workers", "0",
                 "--batch-size", "4", "--predictions", str(preds), "--out", str(out),
                 "--report", str(report))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads(out.read_text())
    assert COCO_KEYS <= set(metrics) and metrics["protocol"] == "coco" and metrics["split"] == "annotations"
    assert metrics["num_novel"] == 2 and metrics["num_base"] == 2 and len(metrics["per_category"]) == 4
    assert all(0 <= metrics[k] <= 100 for k in ("AP50_novel", "AP50_base", "AP50_all", "AP"))
    meta = metrics["meta"]
    assert meta["templates"] == "clip7" and meta["template_mode"] == "logit" and meta["untrained"] is True
    assert meta["vocabulary_size"] == 4 and meta["detections_per_image"] == 50 and metrics["max_dets"] == 100
    assert "AP50_novel" in proc.stdout and "UNTRAINED" in proc.stderr
    records = json.loads(preds.read_text())
    assert records and {r["image_id"] for r in records} == {1, 2, 3, 4, 5, 6}
    assert {p.name for p in report.iterdir()} >= {"report.md", "ap50_per_category.png"}
    assert "clip7" in (report / "report.md").read_text()

    # the saved predictions alone (no --model, no --images) give the same metrics, meta included
    again = ovdet("eval", "--annotations", str(root / "gt.json"), "--predictions", str(preds),
                  "--out", str(tmp_path / "again.json"))  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert json.loads((tmp_path / "again.json").read_text()) == metrics
    assert not any(tmp_path.glob("preds.per_image.json"))  # folder-mode files only without ground truth


def test_ground_truth_as_predictions_scores_100_on_generated_shapes(shapes_coco, tmp_path, capsys):
    root, gt = shapes_coco
    preds = tmp_path / "gt_preds.json"
    preds.write_text(json.dumps(gt_as_predictions(gt)))
    assert main(["eval", "--annotations", str(root / "gt.json"), "--predictions", str(preds),
                 "--novel", "triangle,star", "--out", str(tmp_path / "m.json")]) == 0  # fmt: skip
    m = json.loads((tmp_path / "m.json").read_text())
    assert (m["AP50_novel"], m["AP50_base"], m["AP50_all"], m["AP"]) == (100.0, 100.0, 100.0, 100.0)
    assert m["split"] == "custom" and "100.0" in capsys.readouterr().out


def test_ground_truth_as_predictions_scores_100_on_coco128(coco128, tmp_path):
    gt = json.loads((coco128 / "instances.json").read_text())
    preds = tmp_path / "gt_preds.json"
    preds.write_text(json.dumps(gt_as_predictions(gt)))
    proc = ovdet("eval", "--annotations", str(coco128 / "instances.json"), "--predictions", str(preds),
                 "--split", "ovcoco", "--out", str(tmp_path / "m.json"))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    m = json.loads((tmp_path / "m.json").read_text())
    assert m["split"] == "ovcoco" and m["num_images"] == len(gt["images"])
    assert (m["AP50_novel"], m["AP50_base"], m["AP50_all"], m["AP"]) == (100.0, 100.0, 100.0, 100.0)


def test_lvis_json_is_detected_and_reports_apr_apc_apf(shapes_coco, tmp_path):
    root, gt = shapes_coco
    freq = {"circle": "f", "square": "c", "triangle": "r", "star": "r"}
    lvis = {
        "images": [{**img, "neg_category_ids": [], "not_exhaustive_category_ids": []} for img in gt["images"]],
        "annotations": gt["annotations"],
        "categories": [{"id": c["id"], "name": c["name"], "frequency": freq[c["name"]]} for c in gt["categories"]],
    }
    (tmp_path / "lvis.json").write_text(json.dumps(lvis))
    (tmp_path / "preds.json").write_text(json.dumps(gt_as_predictions(gt)))
    assert main(["eval", "--annotations", str(tmp_path / "lvis.json"), "--predictions", str(tmp_path / "preds.json"),
                 "--out", str(tmp_path / "m.json")]) == 0  # fmt: skip
    m = json.loads((tmp_path / "m.json").read_text())
    assert m["protocol"] == "lvis" and m["split"] == "lvis"  # rare = novel by default
    assert (m["AP"], m["APr"], m["APc"], m["APf"]) == (100.0, 100.0, 100.0, 100.0)


def test_hydra_entry_gives_the_same_metrics_as_the_cli(shapes_coco, tmp_path):
    root, gt = shapes_coco
    preds = tmp_path / "preds.json"
    preds.write_text(json.dumps(gt_as_predictions(gt)[::2]))  # half the objects: numbers below 100
    assert main(["eval", "--annotations", str(root / "gt.json"), "--predictions", str(preds),
                 "--out", str(tmp_path / "cli.json")]) == 0  # fmt: skip
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "eval.py"), f"annotations={root / 'gt.json'}", f"predictions={preds}",
         f"hydra.run.dir={tmp_path / 'hydra'}", "report=null"],
        capture_output=True, text=True, env=ENV, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    cli = json.loads((tmp_path / "cli.json").read_text())
    assert json.loads((tmp_path / "hydra" / "metrics.json").read_text()) == cli
    assert 0 < cli["AP50_all"] < 100

    # A user's metrics.json is refused as by `ovdet eval`; overwrite=true replaces it.
    users = tmp_path / "users.json"
    users.write_text('{"mine": 1}')
    run = [sys.executable, str(ROOT / "tools" / "eval.py"), f"annotations={root / 'gt.json'}", f"predictions={preds}",
           f"hydra.run.dir={tmp_path / 'hydra'}", "report=null", f"out={users}"]
    refused = subprocess.run(run, capture_output=True, text=True, env=ENV, timeout=300)
    assert refused.returncode == 2 and "was not written by ovdet" in refused.stderr, refused.stderr
    assert users.read_text() == '{"mine": 1}'
    assert subprocess.run([*run, "overwrite=true"], capture_output=True, env=ENV, timeout=300).returncode == 0
    assert json.loads(users.read_text())["AP50_all"] == cli["AP50_all"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--annotations", "{tmp}/missing.json", "--predictions", "{tmp}/p.json"], "annotation file"),
        (["--annotations", "{gt}", "--predictions", "{tmp}/p.json", "--novel", "unicorn"], "unicorn"),
        (["--annotations", "{gt}", "--predictions", "{tmp}/missing_preds.json"], "predictions file"),
        (["--annotations", "{gt}"], "--images"),  # no --model: the embedded model, which needs images
        (["--annotations", "{gt}", "--model", "{tmp}/m", "--device", "tpu"], "--device"),
    ],
)
def test_user_errors_are_one_line_exit_2(shapes_coco, tmp_path, args, message):
    root, _ = shapes_coco
    proc = ovdet("eval", *(a.format(tmp=tmp_path, gt=root / "gt.json") for a in args))
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ovdet eval: error:") and message in lines[0]


def test_a_bad_image_is_skipped_with_one_line_and_the_run_goes_on(model_dir, shapes_coco, tmp_path):
    import shutil

    root, _ = shapes_coco
    images = Path(shutil.copytree(root, tmp_path / "images"))
    (images / "003.png").write_bytes(b"not a png")  # decoded in a DataLoader worker: it fails there
    preds, out = tmp_path / "preds.json", tmp_path / "metrics.json"
    proc = ovdet("eval", "--model", str(model_dir), "--annotations", str(images / "gt.json"), "--images", str(images),
                 "--workers", "1", "--batch-size", "1", "--predictions", str(preds), "--out", str(out),
                 "--no-progress")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("ovdet eval: warning:")]
    assert len(warnings) == 2, proc.stderr
    assert "skipped image 3: image '" in warnings[0] and "003.png' cannot be decoded" in warnings[0]
    assert "1 of 6 images could not be read" in warnings[1]
    assert {r["image_id"] for r in json.loads(preds.read_text())} == {1, 2, 4, 5, 6}  # the others are kept
    metrics = json.loads(out.read_text())
    assert [s["id"] for s in metrics["meta"]["skipped_images"]] == [3] and metrics["num_images"] == 6

    # a batch mixing read and unread images keeps the read ones
    from ovdet.inference.image_dataset import ImageDataset, collate_images
    from ovdet.preprocess import ImagePreprocessor

    entries = [{"id": i, "file_name": f"00{i}.png"} for i in (2, 3, 4)]
    batch = collate_images([ImageDataset(entries, images, ImagePreprocessor(32))[i] for i in range(3)])
    assert batch["image_ids"] == [2, 4] and batch["pixel_values"].shape[0] == 2
    assert [f["image_id"] for f in batch["failed"]] == [3]

    # folder mode: a file whose header cannot be read is left out when the folder is listed
    folder_preds = tmp_path / "folder.json"
    proc = ovdet("eval", "--model", str(model_dir), "--images", str(images), "--categories", "circle,square",
                 "--predictions", str(folder_preds), "--workers", "0", "--no-progress")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("ovdet eval: warning:")]
    assert len(warnings) == 1 and "skipped image '" in warnings[0] and "003.png'" in warnings[0]
    per_image = json.loads((tmp_path / "folder.per_image.json").read_text())
    assert sorted(r["file_name"] for r in per_image) == ["001.png", "002.png", "004.png", "005.png", "006.png"]


def test_eval_defaults_to_the_embedded_model_like_detect(tmp_path):
    """No --model: `ovdet eval` runs the embedded model, as detect, export, demo and embed-vocab do."""
    import argparse

    from ovdet.assets import DEFAULT_MODEL
    from ovdet.cli import evaluate

    if not (DEFAULT_MODEL / "config.json").is_file():
        pytest.skip("no embedded model shipped")
    seen = {}
    (tmp_path / "a.json").write_text("{}")  # the file arguments are checked before any model is looked for
    args = argparse.Namespace(model=None, annotations=tmp_path / "a.json", images=tmp_path, predictions=None,
                              categories=None, novel=None, split=None, device="cpu", devices=1, batch_size=1,
                              workers=0, max_dets=300, threshold=0.0, nms=0.5, templates=None, template_mode="embed",
                              no_progress=True, protocol="auto", vocabulary="split", out=None, report=None,
                              precision=None, runtime="torch", scoring="model")

    def fake_evaluate(model, *a, **k):
        seen["model"] = model

    import ovdet.evaluation.evaluate as ev

    original = ev.evaluate_model
    ev.evaluate_model = fake_evaluate
    try:
        evaluate._run(args)
    finally:
        ev.evaluate_model = original
    assert seen["model"] == str(DEFAULT_MODEL)
