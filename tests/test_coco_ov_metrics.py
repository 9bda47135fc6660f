"""OV-COCO metrics: perfect predictions score 100, worse ones less, groups equal pycocotools runs."""

import contextlib
import io
import json

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from ovdet.evaluation import EvalResult, evaluate_coco_ov, load_split, run_coco_ov

SHAPES = [("circle", "base"), ("square", "base"), ("triangle", "novel"), ("star", "novel"), ("hexagon", "base")]


def make_coco(num_images: int = 12, seed: int = 0) -> dict:
    """A small COCO json; 'hexagon' has no box, splits are marked on the categories."""
    rng = np.random.default_rng(seed)
    cats = [{"id": i + 1, "name": n, "split": s} for i, (n, s) in enumerate(SHAPES)]
    images, anns = [], []
    for img_id in range(1, num_images + 1):
        images.append({"id": img_id, "file_name": f"{img_id}.png", "width": 200, "height": 200})
        for j in range(1 + img_id % 3):
            x, y = rng.uniform(0, 120, size=2)
            w, h = rng.uniform(15, 75, size=2)
            box = [float(x), float(y), float(w), float(h)]
            anns.append({"id": len(anns) + 1, "image_id": img_id, "category_id": (img_id + j) % 4 + 1,
                         "bbox": box, "area": w * h, "iscrowd": 0})  # fmt: skip
    return {"images": images, "annotations": anns, "categories": cats}


def gt_as_predictions(gt: dict, score: float = 1.0) -> list[dict]:
    return [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": list(a["bbox"]), "score": score}
            for a in gt["annotations"]]  # fmt: skip


def perturbed(gt: dict, seed: int = 1) -> list[dict]:
    """Boxes shifted by up to 40% of their size, random scores: a mediocre detector."""
    rng = np.random.default_rng(seed)
    preds = gt_as_predictions(gt)
    for p in preds:
        x, y, w, h = p["bbox"]
        dx, dy = rng.uniform(-0.4, 0.4, size=2)
        p["bbox"], p["score"] = [x + dx * w, y + dy * h, w, h], float(rng.uniform(0.05, 1.0))
    return preds


def direct_pycocotools(gt: dict, preds: list[dict], cat_ids: list[int]) -> np.ndarray:
    """COCOeval stats restricted to `cat_ids`, in percent (-1 kept for "undefined"), as a user would run it."""
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = json.loads(json.dumps(gt))
        coco_gt.createIndex()
        ev = COCOeval(coco_gt, coco_gt.loadRes(json.loads(json.dumps(preds))), "bbox")
        ev.params.catIds = sorted(cat_ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return np.where(ev.stats < 0, -1.0, ev.stats * 100)


def headline(m: dict) -> list[float]:
    return [m[k] for k in ("AP50_novel", "AP50_base", "AP50_all", "AP", "AP_novel", "AP_base")]


def test_gt_as_predictions_scores_100_on_generated_data():
    gt = make_coco()
    m = evaluate_coco_ov(gt, gt_as_predictions(gt))
    assert m["split"] == "annotations"  # taken from the categories' "split"
    assert headline(m) == pytest.approx([100.0] * 6)
    assert (m["num_images"], m["num_predictions"], m["num_novel"], m["num_base"]) == (12, len(gt["annotations"]), 2, 3)
    by_name = {r["name"]: r for r in m["per_category"]}
    assert by_name["hexagon"]["AP50"] == -1.0 and by_name["hexagon"]["num_gt"] == 0  # no gt: left out
    assert by_name["star"]["split"] == "novel" and by_name["star"]["AP"] == pytest.approx(100.0)


def test_gt_as_predictions_scores_100_on_coco128(coco128):
    gt = json.loads((coco128 / "instances.json").read_text())
    m = evaluate_coco_ov(gt, gt_as_predictions(gt), split="ovcoco")
    assert headline(m) == pytest.approx([100.0] * 6)
    assert m["num_images"] == 128 and (m["num_novel"], m["num_base"]) == (17, 48)


def test_worse_predictions_lower_the_numbers():
    gt = make_coco()
    shifted = evaluate_coco_ov(gt, perturbed(gt))
    assert all(v < 99.0 for v in headline(shifted))
    shuffled = gt_as_predictions(gt)
    for p in shuffled[::2]:  # every other label moved to the next shape
        p["category_id"] = p["category_id"] % 4 + 1
    m = evaluate_coco_ov(gt, shuffled)
    assert all(v < 99.0 for v in headline(m))


@pytest.mark.parametrize("seed", [1, 2])
def test_groups_equal_a_direct_pycocotools_run(seed):
    gt = make_coco(num_images=20, seed=seed)
    preds = perturbed(gt, seed)
    m = evaluate_coco_ov(gt, preds)
    for group, ids in (("novel", [3, 4]), ("base", [1, 2, 5]), ("all", [1, 2, 3, 4, 5])):
        stats = direct_pycocotools(gt, preds, ids)
        # exact, not approx: the group mean is taken over the very slice a restricted run builds
        assert m[f"AP_{group}"] == stats[0]
        assert m[f"AP50_{group}"] == stats[1]
    stats = direct_pycocotools(gt, preds, [1, 2, 3, 4, 5])
    assert [m["AP"], m["AP50"], m["AP75"], m["APs"], m["APm"], m["APl"]] == stats[:6].tolist()


def test_ovcoco_groups_equal_pycocotools_on_coco128(coco128):
    gt = json.loads((coco128 / "instances.json").read_text())
    preds = perturbed(gt)
    m = evaluate_coco_ov(gt, preds, split="ovcoco")
    split = load_split("ovcoco", gt["categories"])
    ids = {g: [c["id"] for c in gt["categories"] if split.group_of(c["name"]) == g] for g in ("novel", "base")}
    ids["all"] = ids["novel"] + ids["base"]  # the 65: OV-COCO leaves 15 COCO classes out
    for group in ("novel", "base", "all"):
        stats = direct_pycocotools(gt, preds, ids[group])
        assert m[f"AP50_{group}"] == stats[1]
        assert m[f"AP_{group}"] == stats[0]


def test_empty_predictions_give_zeros_not_a_crash(tmp_path):
    gt = make_coco()
    path = tmp_path / "preds.json"
    path.write_text("[]")
    m = evaluate_coco_ov(gt, path, split=["star", "triangle"])
    assert headline(m) == [0.0] * 6 and m["num_predictions"] == 0


def test_result_keeps_precision_for_pr_curves_and_is_silent(capsys):
    gt = make_coco()
    result = run_coco_ov(gt, perturbed(gt), split="triangle,star")
    assert isinstance(result, EvalResult) and capsys.readouterr().out == ""
    assert result.precision.shape == (10, 101, 5) and result.cat_ids == [1, 2, 3, 4, 5]
    recall, precision = result.pr_curve(3, iou=0.5)
    assert recall.shape == precision.shape == (101,)
    assert np.all(np.diff(precision) <= 0)  # interpolated precision never rises with recall
    assert np.all(result.precision[:, :, 4] == -1)  # hexagon: no gt
    json.dumps(result.metrics)  # metrics.json material


def test_gt_dict_is_not_modified():
    gt = make_coco()
    before = json.dumps(gt)
    evaluate_coco_ov(gt, perturbed(gt))
    assert json.dumps(gt) == before


def test_bad_inputs_name_the_problem():
    gt = make_coco()
    preds = gt_as_predictions(gt)
    with pytest.raises(ValueError, match="image_id.*999"):
        evaluate_coco_ov(gt, preds + [{**preds[0], "image_id": 999}])
    with pytest.raises(ValueError, match="category_id.*77"):
        evaluate_coco_ov(gt, preds + [{**preds[0], "category_id": 77}])
    with pytest.raises(ValueError, match="lacks.*score"):
        evaluate_coco_ov(gt, [{k: v for k, v in preds[0].items() if k != "score"}])
    with pytest.raises(ValueError, match="pentagon"):
        evaluate_coco_ov(gt, preds, split="star,pentagon")


def test_ovcoco_split_is_48_base_17_novel_coco_names(coco128):
    cats = json.loads((coco128 / "instances.json").read_text())["categories"]
    split = load_split("ovcoco", cats)  # raises if a name is not a COCO category
    assert (len(split.base), len(split.novel)) == (48, 17) and not split.base & split.novel
    assert {"airplane", "bus", "cat", "dog", "cow", "elephant", "umbrella", "tie", "snowboard", "skateboard",
            "cup", "knife", "cake", "couch", "keyboard", "sink", "scissors"} == split.novel  # fmt: skip
    others = [c["name"] for c in cats if split.group_of(c["name"]) == "other"]
    assert len(others) == 15 and "hair drier" in others


def test_split_specs_files_and_rules(tmp_path):
    cats = make_coco()["categories"]
    (tmp_path / "s.txt").write_text("# novel shapes\nstar\ntriangle\n")
    (tmp_path / "s.json").write_text(json.dumps({"novel": ["star"], "base": ["circle"]}))
    (tmp_path / "s.yaml").write_text("novel: [star, triangle]\n")
    (tmp_path / "l.json").write_text(json.dumps(["triangle"]))
    assert load_split(tmp_path / "s.txt", cats).novel == {"star", "triangle"}
    from_json = load_split(str(tmp_path / "s.json"), cats)
    assert [from_json.group_of(n) for n in ("star", "circle", "square")] == ["novel", "base", "other"]
    assert load_split(tmp_path / "s.yaml", cats).novel == {"star", "triangle"}
    assert load_split(tmp_path / "l.json", cats).novel == {"triangle"}
    assert load_split(" star , triangle", cats).group_of("hexagon") == "base"  # base = all the rest
    assert load_split(None, cats).novel == {"triangle", "star"}  # from the categories' "split"
    assert load_split(None, [{"id": 1, "name": "a"}]) is None
    lvis_cats = [{"id": i, "name": n, "frequency": f} for i, (n, f) in enumerate([("a", "r"), ("b", "c"), ("c", "f")])]
    assert load_split("lvis", lvis_cats).novel == {"a"}
    with pytest.raises(ValueError, match="frequency"):
        load_split("lvis", cats)
    with pytest.raises(ValueError, match=r"\['dodecagon', 'pentagon'\]"):
        load_split(["pentagon", "dodecagon", "star"], cats)
    with pytest.raises(ValueError, match="not found"):
        load_split(tmp_path / "missing.txt", cats)
