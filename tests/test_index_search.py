"""`ovdet index` / `ovdet search`: incremental updates, the right image first, detect's score scale, refusals."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ovdet.assets import DEFAULT_MODEL, SCENE
from ovdet.cli.main import main

STAR = (60, 164, 119, 222)  # the star of the bundled scene (ovdet/assets/scene.json), pixels


def crop(path: Path, box) -> Path:
    Image.open(SCENE).convert("RGB").crop(box).save(path)
    return path


def index_cli(*args) -> int:
    return main(["index", *map(str, args), "--quiet", "--device", "cpu"])


def read_index(folder):
    from ovdet.search.region_index import load

    return load(folder)


@pytest.fixture(scope="module")
def default_detector():
    from ovdet.models.detector import Detector

    return Detector.from_pretrained(DEFAULT_MODEL).eval()


def test_adding_files_indexes_only_those_and_removed_files_are_dropped(tmp_path, monkeypatch, capsys, one_thread):
    from ovdet.search import index_predict

    photos = tmp_path / "photos"
    photos.mkdir()
    a, b = crop(photos / "a.png", (0, 0, 150, 150)), crop(photos / "b.png", (150, 0, 300, 150))
    encoded: list[list[str]] = []
    real = index_predict.encode_collection

    def recording(detector, paths, *args, **kwargs):
        encoded.append([Path(p).name for p in paths])
        return real(detector, paths, *args, **kwargs)

    monkeypatch.setattr(index_predict, "encode_collection", recording)
    assert index_cli(photos, "--out", tmp_path / "idx") == 0
    before = read_index(tmp_path / "idx")
    rows_a = before.embeds[: before.images[0]["regions"]].copy()

    crop(photos / "c.png", STAR[:2] + (STAR[0] + 80, STAR[1] + 80))  # new
    b.unlink()  # removed
    os.utime(a, ns=(a.stat().st_atime_ns, a.stat().st_mtime_ns + 10**9))  # touched, same bytes
    capsys.readouterr()
    assert index_cli(photos, "--out", tmp_path / "idx") == 0
    assert encoded == [["a.png", "b.png"], ["c.png"]]  # only the new file was encoded
    assert "indexed 1 new and 0 changed, kept 1 unchanged, dropped 1 removed" in capsys.readouterr().out
    after = read_index(tmp_path / "idx")
    assert [Path(img["path"]).name for img in after.images] == ["a.png", "c.png"]
    np.testing.assert_array_equal(after.embeds[: after.images[0]["regions"]], rows_a)  # kept rows untouched
    assert after.num_regions == sum(img["regions"] for img in after.images)
    # the default model's trained region classifier names regions too: its rows follow every update
    assert after.arrays["classifier_embeds"].shape == after.embeds.shape
    assert after.arrays["classifier_reference_lse"].shape == (after.num_regions,)

    crop(a, (0, 150, 150, 300))  # changed content
    assert index_cli(photos, "--out", tmp_path / "idx") == 0
    assert encoded[-1] == ["a.png"]
    assert "indexed 0 new and 1 changed, kept 1 unchanged, dropped 0 removed" in capsys.readouterr().out
    assert index_cli(photos, "--out", tmp_path / "idx") == 0  # nothing to do: nothing encoded
    assert len(encoded) == 3


def test_extending_by_nothing_keeps_the_classifier_rows():
    """An update whose new files all fail to load adds no rows: the region classifier's rows must stay."""
    from ovdet.search.region_index import RegionIndex

    rows = {"boxes": np.zeros((2, 4), np.float32), **{k: np.zeros(2, np.float32) for k in
            ("objectness", "logit_scale", "logit_bias", "reference_lse", "classifier_reference_lse")},
            "classifier_embeds": np.ones((2, 3), np.float32)}  # fmt: skip
    index = RegionIndex("m", "f", "region", 2, 3)
    index.extend([{"path": "a.png"}], [np.ones((2, 3), np.float32)], [rows])
    index.extend([], [], [])
    assert index.arrays["classifier_embeds"].shape == (2, 3) and len(index.arrays["classifier_reference_lse"]) == 2


def test_search_returns_the_image_with_the_star_first(tmp_path, default_detector, one_thread):
    from ovdet.search.region_search import search

    paths = [crop(tmp_path / "circle.png", (150, 0, 300, 150)), crop(tmp_path / "star.png", (30, 140, 150, 250)),
             crop(tmp_path / "square.png", (20, 40, 150, 160))]
    index = _index_of(default_detector, paths)
    hits = search(default_detector, index, ["star"], top=3)
    assert Path(hits[0].path).name == "star.png"
    assert _iou(hits[0].box, (STAR[0] - 30, STAR[1] - 140, STAR[2] - 30, STAR[3] - 140)) > 0.5
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


@pytest.mark.parametrize("queries", [["star"], ["star", "circle"], ["circle"]])
def test_search_scores_are_detect_scores(tmp_path, default_detector, queries, one_thread):
    """Region scoring (the embedded model): the same box and score as `detect` for its best detection per query."""
    from ovdet.search.region_search import search

    index = _index_of(default_detector, [SCENE])
    hits = search(default_detector, index, queries, top=50)
    dets = default_detector.detect(SCENE, queries, threshold=0.0, max_detections=1000)[0]
    for qi, query in enumerate(queries):
        best_hit = next(h for h in hits if h.query == query)
        best_det = next(d for d in dets if d.label == qi)
        assert best_hit.score == pytest.approx(best_det.score, abs=2e-4)
        np.testing.assert_allclose(best_hit.box, best_det.box, atol=0.02)


@pytest.mark.filterwarnings("ignore:UNTRAINED")
def test_head_scoring_matches_detect_on_a_model_without_a_region_scorer(tmp_path, perturbed_detector, one_thread):
    from ovdet.search.region_search import search

    scene = tmp_path / "scene.png"
    Image.open(SCENE).convert("RGB").save(scene)
    index = _index_of(perturbed_detector, [scene], regions=10**6)  # every region
    assert index.scoring == "head"
    hits = search(perturbed_detector, index, ["a red circle", "star"], top=5, nms=None)
    dets = perturbed_detector.detect(scene, ["a red circle", "star"], threshold=0.0, nms=None, max_detections=20)[0]
    assert hits[0].score == pytest.approx(dets[0].score, abs=2e-4)  # the best score, whichever of a near tie
    for hit in hits:  # every hit is one of detect's (query, box, score): near ties may come in either order
        assert any(d.query == hit.query and abs(d.score - hit.score) <= 2e-4
                   and np.allclose(d.box, hit.box, atol=0.02) for d in dets), hit


def test_cli_index_then_search_writes_marked_json_and_sheet(tmp_path, capsys, default_detector, one_thread):
    from ovdet.file_mark import is_ours

    assert index_cli(SCENE, "--out", tmp_path / "idx") == 0
    out, sheet = tmp_path / "hits.json", tmp_path / "hits.png"
    code = main(["search", str(tmp_path / "idx"), "star", "--top", "3", "--out", str(out), "--sheet", str(sheet),
                 "--device", "cpu"])  # fmt: skip
    assert code == 0
    hits = json.loads(out.read_text())
    assert len(hits) == 3 and {"path", "box", "score"} <= set(hits[0])
    assert hits[0]["path"] == str(SCENE) and _iou(hits[0]["box"], STAR) > 0.5
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    assert is_ours(out) and is_ours(sheet)
    assert Image.open(sheet).size[0] > 0
    assert "star" in capsys.readouterr().out
    # an image exemplar, as detect --exemplar takes it: detect's best box and score
    code = main(["search", str(tmp_path / "idx"), "--exemplar", f"{SCENE}:{','.join(map(str, STAR))}", "--top", "1",
                 "--out", str(out), "--device", "cpu", "--quiet"])  # fmt: skip
    best = default_detector.detect(SCENE, [], exemplars=[(SCENE, STAR)], threshold=0.0)[0][0]
    assert code == 0 and json.loads(out.read_text())[0]["score"] == pytest.approx(best.score, abs=2e-4)
    np.testing.assert_allclose(json.loads(out.read_text())[0]["box"], best.box, atol=0.02)


def test_another_model_is_refused_in_one_line(tmp_path, perturbed_detector, capsys):
    perturbed_detector.save_pretrained(tmp_path / "other")
    assert index_cli(SCENE, "--out", tmp_path / "idx") == 0
    capsys.readouterr()
    assert main(["search", str(tmp_path / "idx"), "star", "--model", str(tmp_path / "other"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert "was built with model" in err and "\n" not in err
    assert index_cli(SCENE, "--out", tmp_path / "idx", "--model", tmp_path / "other") == 2  # nor updated with it
    assert "was built with model" in capsys.readouterr().err


def test_a_folder_that_is_not_an_index_is_refused_and_never_replaced(tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    assert index_cli(SCENE, "--out", mine) == 2
    assert "not empty and is not a region index" in capsys.readouterr().err
    assert (mine / "notes.txt").read_text() == "keep me"
    assert main(["search", str(mine), "star"]) == 2
    assert "is not an ovdet region index" in capsys.readouterr().err


def test_a_damaged_index_is_refused_in_one_line(tmp_path, capsys):
    assert index_cli(SCENE, "--out", tmp_path / "idx") == 0
    mine = tmp_path / "hits.json"
    mine.write_text("[]")  # the user's own file: refused before any work
    capsys.readouterr()
    assert main(["search", str(tmp_path / "idx"), "star", "--out", str(mine)]) == 2
    assert "was not written by ovdet" in capsys.readouterr().err and mine.read_text() == "[]"
    assert index_cli(SCENE, "--out", tmp_path / "idx", "--regions-per-image", "8") == 2
    assert "holds 32 regions per image, not 8" in capsys.readouterr().err
    vectors = tmp_path / "idx" / "regions.faiss"
    vectors.write_bytes(vectors.read_bytes()[:100])
    assert main(["search", str(tmp_path / "idx"), "star"]) == 2
    err = capsys.readouterr().err.strip()
    assert "is damaged" in err and "\n" not in err
    (tmp_path / "idx" / "index.json").write_text("{cut")
    assert main(["search", str(tmp_path / "idx"), "star"]) == 2
    err = capsys.readouterr().err.strip()
    assert "index.json' is not valid JSON" in err and "\n" not in err


def test_ranking_keeps_top_hits_after_nms_over_many_duplicates():
    from ovdet.search.region_scorer import rank_hits

    n = 3000  # image 0: 2999 copies of one box (NMS keeps one), image 1: one box that scores lowest
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0]]).repeat(n, 1)
    scores = torch.linspace(1.0, 0.5, n)[:, None]  # [N, 1]
    rows = torch.zeros(n, dtype=torch.long)
    rows[-1] = 1
    ranked = rank_hits(scores, boxes, rows, top=2, nms=0.5)
    assert [(r, q) for r, q, _ in ranked] == [(0, 0), (n - 1, 0)]
    assert len(rank_hits(scores, boxes, rows, top=5, nms=None)) == 5


def _index_of(detector, paths, regions: int | None = None):
    from ovdet.search.index_predict import encode_collection
    from ovdet.search.region_encoder import (
        default_regions,
        model_fingerprint,
        scoring_kind,
    )
    from ovdet.search.region_index import RegionIndex

    regions = regions or default_regions(detector)
    index = RegionIndex("test", model_fingerprint(detector), scoring_kind(detector), regions,
                        detector.text_encoder.embed_dim)  # fmt: skip
    records, skipped = encode_collection(detector, [str(p) for p in paths], regions, accelerator="cpu", progress=False)
    assert not skipped
    index.extend([{"path": str(paths[rec["id"]]), "width": rec["width"], "height": rec["height"]} for rec in records],
                 [rec["embeds"] for rec in records], [rec["arrays"] for rec in records])  # fmt: skip
    return index


def _iou(a, b) -> float:
    from torchvision.ops import box_iou

    return float(box_iou(torch.tensor([a], dtype=torch.float32), torch.tensor([b], dtype=torch.float32))[0, 0])


def test_the_stored_reference_term_gives_the_full_softmax_and_is_ignored_for_a_reference_name(seeded):
    from ovdet.models.crop_rescorer import CropRescorer
    from ovdet.search.region_scorer import score_regions

    n, e = 200, 16
    unit = lambda *shape: torch.nn.functional.normalize(torch.randn(*shape), dim=-1)
    embeds, reference, queries = unit(n, e), unit(5, e), unit(2, e)
    objectness, ones, zeros = torch.randn(n), torch.ones(n), torch.zeros(n)
    rescorer = CropRescorer(weight=0.5, novel_weight=0.7, logit_scale=30.0, reference=list("abcde"))
    stored = (30.0 * embeds @ reference.T).logsumexp(-1)  # [N]
    full = score_regions(embeds, objectness, ones, zeros, queries, rescorer, reference)
    fast = score_regions(embeds, objectness, ones, zeros, queries, rescorer, reference, stored)
    torch.testing.assert_close(fast, full, rtol=1e-5, atol=1e-6)
    named = torch.cat([queries[:1], reference[2:3]])  # the second query is reference name "c"
    torch.testing.assert_close(score_regions(embeds, objectness, ones, zeros, named, rescorer, reference, stored + 5),
                               score_regions(embeds, objectness, ones, zeros, named, rescorer, reference))


def test_without_faiss_an_index_is_one_line_naming_the_package(tmp_path, monkeypatch):
    import sys

    from ovdet.errors import OvdetError
    from ovdet.search import region_index

    monkeypatch.setitem(sys.modules, "faiss", None)  # import faiss now raises ImportError
    with pytest.raises(OvdetError, match="pip install faiss-cpu"):
        region_index.save(region_index.RegionIndex("m", "f", "head", 4, 8), tmp_path / "idx")
    assert not (tmp_path / "idx").exists()


def test_an_unreadable_photo_is_reported_skipped_and_tried_again(tmp_path, capsys, one_thread):
    photos = tmp_path / "photos"
    photos.mkdir()
    crop(photos / "good.png", (0, 0, 150, 150))
    (photos / "broken.png").write_bytes(b"not a png")
    assert index_cli(photos, "--out", tmp_path / "idx") == 2
    out, err = capsys.readouterr()
    assert "indexed 1 new" in out and "broken.png" in err and "1 images could not be read" in err
    assert [Path(img["path"]).name for img in read_index(tmp_path / "idx").images] == ["good.png"]
    assert index_cli(photos, "--out", tmp_path / "idx") == 2  # tried again, the good one kept
    assert "indexed 0 new and 0 changed, kept 1 unchanged" in capsys.readouterr().out
