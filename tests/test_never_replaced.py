"""Section C of issue M for `ovdet detect` and `ovdet eval`: every file they write carries ovdet's mark, an
existing file without it (the user's) is refused in one line naming it, before any work, unless --overwrite;
and an existing --predictions file without --model is scored, never written."""

import json

import pytest
from PIL import Image

from ovdet.cli.main import main
from ovdet.errors import OvdetError
from ovdet.file_mark import is_ours, marked
from ovdet.models.detector import Detector
from ovdet.safe_write import check_output_path

USER_JSON = '{"mine": "keep me"}'


@pytest.fixture(scope="module")
def model_dir(perturbed_detector, tmp_path_factory):
    return perturbed_detector.save_pretrained(tmp_path_factory.mktemp("m") / "model")


@pytest.fixture()
def photos(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for name, colour in (("cat.jpg", (200, 30, 30)), ("dog.jpg", (30, 200, 30))):
        Image.new("RGB", (40, 30), colour).save(folder / name)
    return folder


@pytest.fixture()
def shapes(tmp_path, photos):
    """A COCO json over the two photos: enough for `ovdet eval` with a model or with saved predictions."""
    gt = {"images": [{"id": i, "file_name": n, "width": 40, "height": 30} for i, n in ((1, "cat.jpg"), (2, "dog.jpg"))],
          "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
          "annotations": [{"id": i, "image_id": i, "category_id": i, "bbox": [5, 5, 20, 15], "area": 300, "iscrowd": 0}
                          for i in (1, 2)]}  # fmt: skip
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    preds = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
             for a in gt["annotations"]]  # fmt: skip
    (tmp_path / "preds.json").write_text(json.dumps(preds))
    return tmp_path / "gt.json", tmp_path / "preds.json"


def _refused(capsys, path) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and f"'{path}' exists and was not written by ovdet" in lines[0], lines
    assert "--overwrite" in lines[0]
    return lines[0]


def test_check_output_path_asks_for_the_mark_not_only_the_suffix(tmp_path):
    user, ours = tmp_path / "user.json", tmp_path / "ours.json"
    user.write_text(USER_JSON)
    ours.write_text(json.dumps(marked({"AP": 1.0})))
    with pytest.raises(OvdetError, match="was not written by ovdet"):
        check_output_path(user, "--out")
    assert check_output_path(ours, "--out") == ours
    assert check_output_path(user, "--out", overwrite=True) == user
    with pytest.raises(OvdetError, match="is an input of this run"):  # --overwrite never destroys an input
        check_output_path(user, "--out", inputs=[user], overwrite=True)


def test_detect_out_replaces_only_its_own_json(model_dir, photos, tmp_path, capsys):
    out = tmp_path / "my.json"
    out.write_text(USER_JSON)
    base = ["detect", str(photos / "cat.jpg"), "-q", "cat", "--model", str(model_dir), "--threshold", "0", "--quiet"]
    assert main([*base, "--out", str(out)]) == 2
    _refused(capsys, out)
    assert out.read_text() == USER_JSON
    assert main([*base, "--out", str(out), "--overwrite"]) == 0
    assert is_ours(out) and json.loads(out.read_text())[0]["path"] == str(photos / "cat.jpg")
    assert main([*base, "--out", str(out)]) == 0  # its own result: replaced without --overwrite
    sidecar = tmp_path / "other.meta.json"
    sidecar.write_text(USER_JSON)  # the user's file where --out's sidecar would go
    capsys.readouterr()
    assert main([*base, "--out", str(tmp_path / "other.json")]) == 2
    _refused(capsys, sidecar)
    assert sidecar.read_text() == USER_JSON and not (tmp_path / "other.json").exists()


def test_detect_draw_never_replaces_a_users_png(model_dir, photos, tmp_path, capsys):
    users = photos / "cat.png"
    Image.new("RGB", (4, 4), (1, 2, 3)).save(users)  # the user's own cat.png beside cat.jpg
    before = users.read_bytes()
    base = ["detect", str(photos / "cat.jpg"), "-q", "cat", "--model", str(model_dir), "--quiet", "--draw", str(photos)]
    assert main(base) == 2
    _refused(capsys, users)
    assert users.read_bytes() == before
    assert main([*base, "--overwrite"]) == 0 and is_ours(users) and Image.open(users).size == (40, 30)
    assert main(base) == 0  # a drawing ovdet made is replaced


def test_detect_pipeline_records_of_a_folder_name_their_image(model_dir, photos, tmp_path):
    out = tmp_path / "p.json"
    assert main(["detect", str(photos), "-q", "cat", "--model", str(model_dir), "--threshold", "0", "--quiet",
                 "--out", str(out), "--out-format", "pipeline"]) == 0  # fmt: skip
    records = json.loads(out.read_text())
    assert [r["path"] for r in records] == [str(photos / "cat.jpg"), str(photos / "dog.jpg")]
    assert all(set(d) == {"score", "label", "box"} for r in records for d in r["detections"])
    assert records[0]["detections"] and records[0]["detections"][0]["label"] == "cat"


def test_eval_scores_existing_predictions_without_model_and_never_writes_them(shapes, photos, tmp_path, capsys,
                                                                             monkeypatch):
    gt, preds = shapes
    before = preds.read_bytes()

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded: the saved predictions would have been replaced")

    monkeypatch.setattr(Detector, "from_pretrained", classmethod(lambda cls, *a, **k: refuse()))
    out = tmp_path / "metrics.json"
    assert main(["eval", "--annotations", str(gt), "--images", str(photos), "--predictions", str(preds),
                 "--out", str(out)]) == 0  # fmt: skip
    assert preds.read_bytes() == before and not (tmp_path / "preds.meta.json").exists()
    assert json.loads(out.read_text())["AP50_all"] == pytest.approx(100.0) and is_ours(out)
    assert "scoring the saved predictions" in capsys.readouterr().err


def test_eval_with_a_model_replaces_only_its_own_files(model_dir, shapes, photos, tmp_path, capsys):
    gt, _ = shapes
    run = tmp_path / "run.json"
    side = tmp_path / "run.meta.json"
    side.write_text(USER_JSON)  # the user's file where the sidecar goes
    base = ["eval", "--model", str(model_dir), "--annotations", str(gt), "--images", str(photos), "--workers", "0",
            "--no-progress", "--predictions", str(run)]  # fmt: skip
    assert main(base) == 2
    _refused(capsys, side)
    assert side.read_text() == USER_JSON and not run.exists()
    side.unlink()
    report = tmp_path / "report"
    assert main([*base, "--report", str(report), "--out", str(tmp_path / "m.json")]) == 0
    assert all(is_ours(p) for p in [run, side, tmp_path / "m.json", *report.iterdir()])
    assert main([*base, "--report", str(report), "--out", str(tmp_path / "m.json")]) == 0  # its own: replaced
    run.write_text(run.read_text().replace("]", " ]", 1))  # edited by hand: the user's now
    capsys.readouterr()
    capsys.readouterr()
    assert main(base) == 2
    _refused(capsys, run)
    Image.new("RGB", (4, 4)).save(report / "pr_novel.png")  # a user's plot in the report folder
    assert main([*base, "--predictions", str(tmp_path / "new.json"), "--report", str(report)]) == 2
    _refused(capsys, report / "pr_novel.png")


def test_eval_folder_mode_keeps_a_users_images_json(model_dir, photos, tmp_path, capsys):
    users = tmp_path / "folder.images.json"
    users.write_text(USER_JSON)
    base = ["eval", "--model", str(model_dir), "--images", str(photos), "--categories", "cat,dog", "--workers", "0",
            "--no-progress", "--predictions", str(tmp_path / "folder.json")]  # fmt: skip
    assert main(base) == 2
    _refused(capsys, users)
    assert users.read_text() == USER_JSON
    assert main([*base, "--overwrite"]) == 0
    written = [tmp_path / n for n in ("folder.json", "folder.meta.json", "folder.images.json",
                                      "folder.per_image.json", "folder.per_image.meta.json")]  # fmt: skip
    assert all(is_ours(p) for p in written), [p.name for p in written if not is_ours(p)]
    assert main(base) == 0
