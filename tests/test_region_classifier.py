"""F-VLM's trained region classifier in one-pass region scoring: its share of the naming, saving, fitting, the tool."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from ovdet.models.detector import Detector
from ovdet.models.region_classifier import RegionClassifier
from ovdet.training.region_classifier_fit import fit_region_classifier
from test_dense_distill import INPUT, resnet_dir  # noqa: F401  (the tiny ResNet CLIP fixture)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
SCORING = {"topk": 3, "weight": 0.4, "novel_weight": 0.7, "context": 0.2, "reference": ["circle", "square"]}
WITH_CLASSIFIER = {**SCORING, "classifier_hidden": 16, "classifier_weight": 1.0, "novel_classifier_weight": 0.0}


@pytest.fixture
def detector(resnet_dir):  # noqa: F811
    torch.manual_seed(0)
    det = Detector.from_clip(str(resnet_dir), image_size=INPUT, region_scoring=WITH_CLASSIFIER).eval()
    with torch.no_grad():
        for p in [*det.head.parameters(), *det.region_classifier.parameters()]:
            p.add_(0.3 * torch.randn_like(p))  # distinct boxes, and a classifier that disagrees with CLIP
    return det


def _logits(det, x, queries):
    return det.predict(x, queries)["logits"][0]  # [P, Q]


def test_the_classifier_takes_its_share_of_base_names_only(detector, one_thread):
    x = torch.randn(1, 3, INPUT, INPUT)
    queries = ["circle", "star"]  # a reference (base) name and a novel one
    joint = _logits(detector, x, queries)
    detector.set_region_scoring({**WITH_CLASSIFIER, "classifier_weight": 0.0})
    clip_alone = _logits(detector, x, queries)
    detector.set_region_scoring(SCORING)  # no classifier keys at all: the same as a share of 0
    torch.testing.assert_close(_logits(detector, x, queries), clip_alone)
    scored = joint[:, 0] > -1e3
    assert int(scored.sum()) == SCORING["topk"]
    torch.testing.assert_close(joint[:, 1], clip_alone[:, 1])  # "star": novel, share 0, untouched
    assert (joint[scored, 0] - clip_alone[scored, 0]).abs().max() > 1e-3  # "circle": the classifier's say
    # ... and it is exactly objectness^(1-w) * p_classifier^w, p over the same softmax of queries + references
    out = detector(x, detector.encode_queries(queries), keep_region_map=True)
    top = out["objectness"][0].topk(SCORING["topk"]).indices
    boxes = out["pred_boxes"][0, top][None]  # [1, K, 4]
    scorer = detector.rescorer
    maps = detector.backbone.region_stage(scorer.pooled_rois(detector.backbone, x, boxes, out["region_map"]))
    names = detector.encode_queries(["circle", "star", "square"])  # "circle" asked, "square" only competes
    p = (detector.rescorer.logit_scale * F.normalize(detector.region_classifier(maps), dim=-1) @ names.T).softmax(-1)
    obj = out["objectness"][0, top].sigmoid()
    expected = torch.logit(obj ** 0.6 * p[:, 0] ** 0.4)
    torch.testing.assert_close(joint[top, 0], expected, rtol=1e-4, atol=1e-4)


def test_a_classifier_is_saved_with_the_head_and_dropped_with_its_keys(detector, tmp_path, one_thread):
    x = torch.randn(1, 3, INPUT, INPUT)
    detector.save_pretrained(tmp_path / "m")
    loaded = Detector.from_pretrained(tmp_path / "m")
    assert loaded.region_scoring == WITH_CLASSIFIER
    torch.testing.assert_close(_logits(loaded, x, ["circle", "star"]), _logits(detector, x, ["circle", "star"]))
    loaded.set_region_scoring(SCORING)  # the keys dropped: the folder saved now has no classifier, and loads
    loaded.save_pretrained(tmp_path / "plain")
    plain = Detector.from_pretrained(tmp_path / "plain")
    assert plain.region_classifier is None
    with pytest.raises(ValueError, match="train one with tools/train_region_classifier.py"):
        plain.set_region_scoring(WITH_CLASSIFIER)
    assert plain.region_scoring == SCORING  # a refused setting leaves the detector as it was


@pytest.mark.parametrize("bad, message", [
    ({**WITH_CLASSIFIER, "classifier_weight": 1.5}, "region_scoring.classifier_weight"),
    ({**WITH_CLASSIFIER, "classifier_hidden": 0}, "region_scoring.classifier_hidden"),
    ({**WITH_CLASSIFIER, "classifier_hidden": 2.5}, "wrong type"),
])
def test_bad_classifier_settings_are_refused_naming_the_key(resnet_dir, bad, message):  # noqa: F811
    with pytest.raises(ValueError, match=message):
        Detector.from_clip(str(resnet_dir), image_size=INPUT, region_scoring=bad)


def test_crop_rescoring_has_no_classifier_keys(resnet_dir):  # noqa: F811
    with pytest.raises(ValueError, match="rescore has unknown key"):
        Detector.from_clip(str(resnet_dir), image_size=INPUT, rescore={"topk": 3, "classifier_weight": 0.5})


def test_the_fit_names_its_training_regions_and_the_vocabulary_stays_an_input(one_thread):
    torch.manual_seed(0)
    text = F.normalize(torch.randn(3, 8), dim=-1)  # [L, E]: three names
    centres = torch.randn(3, 40) * 3
    labels = torch.arange(3).repeat_interleave(50)
    maps = (centres[labels] + torch.randn(150, 40)).half()  # [N, D]: one cluster a name
    classifier, losses = fit_region_classifier(maps, labels, text, logit_scale=20.0, hidden=32, epochs=30, progress=False)
    assert isinstance(classifier, RegionClassifier) and not classifier.training
    assert losses[-1] < 0.5 * losses[0]
    with torch.no_grad():
        embeds = F.normalize(classifier(maps), dim=-1)  # [N, E]: the joint space, not a layer per name
    assert ((embeds @ text.T).argmax(-1) == labels).float().mean() > 0.95


def test_unnamed_regions_learn_the_teachers_crop_embedding(one_thread):
    """Label -1 rows carry no name; with a teacher's crop embeddings they still pull the classifier toward it."""
    torch.manual_seed(0)
    text = F.normalize(torch.randn(2, 8), dim=-1)  # [L, E]: two (base) names
    centres = torch.randn(3, 40) * 3
    group = torch.arange(3).repeat_interleave(50)  # the third cluster is a shape no annotation names
    maps = (centres[group] + torch.randn(150, 40)).half()  # [N, D]
    labels = torch.where(group < 2, group, -1)
    novel = F.normalize(torch.randn(8), dim=0)  # [E]: where the teacher puts the unnamed shape
    crops = torch.cat([text, novel[None]])[group]  # [N, E]
    named_only, _ = fit_region_classifier(maps, labels, text, 20.0, hidden=32, epochs=150, progress=False)
    with_teacher, _ = fit_region_classifier(maps, labels, text, 20.0, hidden=32, epochs=150, progress=False,
                                            crops=crops, crop_weight=3.0)
    with torch.no_grad():
        cos = [F.normalize(net(maps[group == 2]), dim=-1) @ novel for net in (named_only, with_teacher)]  # [50] each
    assert cos[1].mean() > 0.8 and cos[1].mean() > cos[0].mean() + 0.5  # measured 0.92 against 0.03
    with torch.no_grad():  # the names are still learnt
        named = F.normalize(with_teacher(maps[group < 2]), dim=-1) @ text.T
    assert (named.argmax(-1) == group[group < 2]).float().mean() > 0.95


def test_the_tool_adds_a_classifier_and_refuses_bad_input(detector, resnet_dir, tmp_path, capsys, one_thread):  # noqa: F811
    import train_region_classifier as tool
    from ovdet.data.shapeworld_dataset import write_dataset

    model = detector.save_pretrained(tmp_path / "model")
    write_dataset(tmp_path / "sw", num_images=4, seed=0, annotate="base", progress=False)
    args = ["--annotations", str(tmp_path / "sw/instances.json"), "--images", str(tmp_path / "sw/images"),
            "--epochs", "2", "--hidden", "8", "--quiet"]
    assert tool.main([str(model), *args, "--out", str(tmp_path / "new")]) == 0
    new = Detector.from_pretrained(tmp_path / "new")
    assert new.region_scoring["classifier_hidden"] == 8 and new.region_scoring["classifier_weight"] == 0.5
    info = json.loads((tmp_path / "new/config.json").read_text())["info"]["region_classifier"]
    base = {c["name"] for c in json.loads((tmp_path / "sw/instances.json").read_text())["categories"] if c["split"] == "base"}
    assert info["regions"] > 0 and set(info["names"]) <= base  # only annotated (base) names are ever targets
    plain = info["regions"]
    write_dataset(tmp_path / "tune", num_images=3, seed=2000, progress=False)
    tuned = ["--tune", str(tmp_path / "tune"), "--classifier-weights", "0", "1", "--out", str(tmp_path / "tuned")]
    assert tool.main([str(model), *args, *tuned]) == 0
    info = json.loads((tmp_path / "tuned/config.json").read_text())["info"]["region_classifier"]
    assert [row["classifier_weight"] for row in info["tuning"]] == [0.0, 1.0]
    chosen = Detector.from_pretrained(tmp_path / "tuned")
    assert chosen.region_scoring["classifier_weight"] in (0.0, 1.0) and chosen.threshold == info["threshold"]
    taught = ["--teacher", str(resnet_dir), "--novel-classifier-weight", "0", "0.5", "--classifier-weights", "0.5"]
    assert tool.main([str(model), *args, "--tune", str(tmp_path / "tune"), *taught, "--out", str(tmp_path / "taught")]) == 0
    info = json.loads((tmp_path / "taught/config.json").read_text())["info"]["region_classifier"]
    assert [row["novel_classifier_weight"] for row in info["tuning"]] == [0.0, 0.5] and info["crop_weight"] == 3.0
    assert info["regions"] > plain and info["teacher"] == str(resnet_dir)  # every top region, named or not
    assert tool.main([str(model), *args, "--teacher", str(tmp_path / "nowhere"), "--out", str(tmp_path / "y")]) == 2
    assert "--teacher" in capsys.readouterr().err
    (tmp_path / "theirs").mkdir()
    (tmp_path / "theirs/notes.txt").write_text("mine")
    assert tool.main([str(model), *args, "--out", str(tmp_path / "theirs")]) == 2
    assert "theirs" in capsys.readouterr().err and (tmp_path / "theirs/notes.txt").read_text() == "mine"
    assert tool.main([str(model), *args[:1], str(tmp_path / "missing.json"), *args[2:], "--out", str(tmp_path / "x")]) == 2
    assert "missing.json" in capsys.readouterr().err
