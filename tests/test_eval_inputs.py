"""`ovdet eval` inputs: a bad prediction or annotation record is one line naming it and the fix; millions of
detections are read in bounded memory."""

import json
import os
import re
import resource
import subprocess
import sys

import pytest

from ovdet.cli.main import main
from ovdet.evaluation.predictions import read_predictions

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
GOOD = {"image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 30], "score": 0.9}
GT = {
    "images": [{"id": i, "file_name": f"{i}.png", "width": 100, "height": 100} for i in range(1, 7)],
    "categories": [{"id": i, "name": n} for i, n in enumerate(["circle", "square", "triangle", "star"], start=1)],
    "annotations": [{"id": i, "image_id": i % 6 + 1, "category_id": i % 4 + 1, "bbox": [10, 10, 20, 30],
                     "area": 600, "iscrowd": 0} for i in range(1, 13)],
}  # fmt: skip


def one_error_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ovdet eval: error:"), lines
    return lines[0]


@pytest.mark.parametrize(
    "predictions, message",
    [
        ([{**GOOD, "bbox": [10, 10, 20]}],
         r"record 0 \(image 1\) has bbox \[10, 10, 20\]; give \[x, y, width, height\]"),
        ([GOOD, {**GOOD, "bbox": None}], r"record 1 \(image 1\) has bbox None"),
        ([{**GOOD, "bbox": "10,10,20,30"}], r"has bbox '10,10,20,30'"),
        ([{**GOOD, "bbox": [10, 10, -1, 5]}], r"width and height >= 0"),
        ([{**GOOD, "score": "0.9"}], r"record 0 \(image 1\) has score '0.9'; give a finite number"),
        ([{**GOOD, "score": float("nan")}], r"has score nan"),
        ([{**GOOD, "image_id": "1"}], r"record 0 has image_id '1'; give the integer id"),
        ({"annotations": [GOOD]}, r"holds a JSON object, not a list of detections"),
        ([[GOOD, GOOD]], r"record 0 is a list \(a list of lists\? give one flat list"),
        ([{"id": 1, "file_name": "1.png", "width": 100}], r"record 0 is an image record"),
        ([{"image_id": 1, "bbox": [1, 1, 2, 2], "score": 1}], r"record 0 lacks \['category_id'\]"),
        ([{**GOOD, "image_id": 99}], r"image_id values that the ground truth lacks: \[99\]"),
        ('[{"image_id": 1, "category_id": 1, "bbox": [10, 1', r"is not valid JSON .*written completely"),
        ("", r"holds nothing"),
    ],
)
def test_bad_predictions_are_one_line_naming_the_record(tmp_path, capsys, predictions, message):
    (tmp_path / "gt.json").write_text(json.dumps(GT))
    path = tmp_path / "preds.json"
    path.write_text(predictions if isinstance(predictions, str) else json.dumps(predictions))
    assert main(["eval", "--annotations", str(tmp_path / "gt.json"), "--predictions", str(path)]) == 2
    line = one_error_line(capsys)
    assert str(path) in line or "ground truth lacks" in line
    assert re.search(message, line), line


def _bad_gt(change):
    gt = json.loads(json.dumps(GT))
    change(gt)
    return gt


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda g: g.update(annotations={"1": GT["annotations"][0]}), r"'annotations' must be a list .* JSON object"),
        (lambda g: g["annotations"][0].update(bbox="10,10,20,30"),
         r"annotations\[0\] \(id 1\) has bbox '10,10,20,30'; give \[x, y, width, height\]"),
        (lambda g: g["annotations"][2].update(image_id="4"),
         r"annotations\[2\] \(id 3\) has image_id '4'; give the integer"),
        (lambda g: g["annotations"][1].pop("category_id"), r"annotations\[1\] \(id 2\) has no 'category_id'"),
        (lambda g: g["annotations"][1].update(category_id=9), r"category_id 9 that none of the json's categories has"),
        (lambda g: g["categories"][3].pop("name"), r"categories\[3\] needs an integer 'id' and a 'name'"),
        (lambda g: g["annotations"][4].update(id=1), r"annotations\[4\] \(id 1\) repeats annotation id 1"),
        (lambda g: g["annotations"].append("a box"), r"annotations\[12\] is 'a box', not an annotation object"),
        (lambda g: g.update(images=[{"id": "1"}]), r"images\[0\] has no integer 'id'"),
    ],
)
def test_bad_annotations_are_one_line_naming_the_record(tmp_path, capsys, change, message):
    gt = tmp_path / "gt.json"
    gt.write_text(json.dumps(_bad_gt(change)))
    (tmp_path / "preds.json").write_text(json.dumps([GOOD]))
    assert main(["eval", "--annotations", str(gt), "--predictions", str(tmp_path / "preds.json")]) == 2
    line = one_error_line(capsys)
    assert str(gt) in line and re.search(message, line), line


def test_the_best_300_per_image_are_kept_as_lvis_keeps_them():
    records = [{**GOOD, "image_id": 1 + i % 2, "score": (i * 37 % 1000) / 1000} for i in range(1000)]
    records += [{**GOOD, "image_id": 3, "score": 0.5} for _ in range(400)]  # ties: the first 300 in file order
    dets, dropped = read_predictions(records, range(1, 7), range(1, 5), max_per_image=300)
    assert dropped == 1400 - 900 and len(dets) == 900
    for img in (1, 2):
        mine = sorted((d["score"] for d in dets if d["image_id"] == img), reverse=True)
        want = sorted((r["score"] for r in records if r["image_id"] == img), reverse=True)[:300]
        assert mine == want
    ties = [d for d in dets if d["image_id"] == 3]
    assert len(ties) == 300 and all(d["score"] == 0.5 for d in ties)
    kept = [d["score"] for d in dets if d["image_id"] == 1]  # in file order, as pycocotools numbers them
    assert kept == [r["score"] for r in records if r["image_id"] == 1 and r["score"] in set(kept)]
    dets[0]["bbox"][0] = -1.0
    assert records[0]["bbox"][0] == 10  # fresh copies: the COCO and LVIS APIs write into them


def _write_many(path, count: int) -> None:
    with path.open("w") as f:
        f.write("[")
        for i in range(count):
            f.write(f'{"," if i else ""}{{"image_id": {i % 6 + 1}, "category_id": {i % 4 + 1}, '
                    f'"bbox": [{i % 50}.5, 10.25, 20.0, 30.0], "score": {(i * 7919 % 100003) / 100003:.5f}}}')
        f.write("]")


def _limited(limit_bytes: int):
    def set_limit():
        resource.setrlimit(resource.RLIMIT_AS, (limit_bytes, limit_bytes))

    return set_limit


def _eval_under_limit(tmp_path, count: int, limit_bytes: int) -> subprocess.CompletedProcess:
    (tmp_path / "gt.json").write_text(json.dumps(GT))
    _write_many(tmp_path / "preds.json", count)
    return subprocess.run(
        [sys.executable, "-m", "ovdet.cli.main", "eval", "--annotations", str(tmp_path / "gt.json"),
         "--predictions", str(tmp_path / "preds.json"), "--out", str(tmp_path / "m.json")],
        capture_output=True, text=True, env=ENV, timeout=900, preexec_fn=_limited(limit_bytes),
    )  # fmt: skip


def test_many_detections_are_read_in_bounded_memory(tmp_path):
    """600k detections (~50 MB of JSON, ~750 MB as Python objects read whole) under a 512 MB address-space cap."""
    proc = _eval_under_limit(tmp_path, 600_000, 512 << 20)
    assert proc.returncode == 0, proc.stderr[-2000:]
    metrics = json.loads((tmp_path / "m.json").read_text())
    # image i % 6 + 1 meets 2 of the 4 categories; COCOeval counts the best 100 of each (image, category)
    assert metrics["num_predictions"] == 6 * 2 * 100 and metrics["num_predictions_dropped"] == 600_000 - 1200
    assert f"{600_000 - 1200} of 600000 detections were left out before scoring" in proc.stderr


@pytest.mark.slow
def test_three_million_detections_under_two_gigabytes(tmp_path):
    proc = _eval_under_limit(tmp_path, 3_000_000, 2 << 30)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads((tmp_path / "m.json").read_text())["num_predictions"] == 1200


def test_confident_false_positives_of_one_category_score_as_pycocotools_scores_them(tmp_path, capsys):
    """400 confident false circles per image used to push every square out of a top 300 per image: AP50 0.0.
    COCOeval counts the best 100 of each image and category, so plain pycocotools on the same files is the
    reference, and the console says what was left out."""
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt = {"images": GT["images"], "categories": GT["categories"][:2],
          "annotations": [{"id": 2 * i + c, "image_id": i, "category_id": c + 1, "bbox": [10 + 40 * c, 10, 20, 30],
                           "area": 600, "iscrowd": 0} for i in range(1, 7) for c in range(2)]}  # fmt: skip
    preds = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 0.5}
             for a in gt["annotations"]]  # fmt: skip
    preds += [{"image_id": i, "category_id": 1, "bbox": [60 + k % 20, 60, 5, 5], "score": 0.9}
              for i in range(1, 7) for k in range(400)]  # fmt: skip
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "preds.json").write_text(json.dumps(preds))
    out = tmp_path / "metrics.json"
    assert main(["eval", "--annotations", str(tmp_path / "gt.json"), "--predictions", str(tmp_path / "preds.json"),
                 "--out", str(out)]) == 0  # fmt: skip
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(str(tmp_path / "gt.json"))
        ev = COCOeval(coco_gt, coco_gt.loadRes(str(tmp_path / "preds.json")), iouType="bbox")
        ev.evaluate(), ev.accumulate(), ev.summarize()
    metrics = json.loads(out.read_text())
    assert metrics["AP50_all"] == pytest.approx(100 * ev.stats[1], abs=1e-6)
    assert metrics["AP"] == pytest.approx(100 * ev.stats[0], abs=1e-6)
    assert metrics["AP50_all"] == pytest.approx(50.0, abs=1e-6)  # squares all found, circles buried under 100 FPs
    err = capsys.readouterr().err
    assert f"{6 * 301} of {len(preds)} detections were left out before scoring" in err
    assert "best 100 of each image and category" in err
