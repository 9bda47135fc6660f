"""`--scoring`: how a model names its boxes, chosen per call without editing its config.json."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from ovdet.models.crop_rescorer import CropRescorer
from ovdet.models.detector import Detector
from ovdet.models.region_pool_scorer import RegionPoolScorer
from ovdet.models.scoring_modes import SCORING_MODES, apply_scoring
from test_cli_detect import ovdet
from test_dense_distill import INPUT, resnet_dir  # noqa: F401  (the tiny ResNet CLIP fixture)

SCORING = {"topk": 3, "weight": 0.4, "novel_weight": 0.7, "context": 0.2, "reference": ["circle", "square"]}


@pytest.fixture
def detector(resnet_dir):  # noqa: F811
    torch.manual_seed(0)
    return Detector.from_clip(str(resnet_dir), image_size=INPUT, region_scoring=SCORING).eval()


def test_each_mode_names_boxes_its_way_and_keeps_the_training_names(detector, one_thread):
    apply_scoring(detector, "model")
    assert type(detector.rescorer) is RegionPoolScorer and detector.region_scoring == SCORING
    apply_scoring(detector, "crops")
    assert type(detector.rescorer) is CropRescorer  # crops win over the saved region scoring
    assert detector.rescorer.reference == SCORING["reference"]  # "star" alone must still beat "circle"
    apply_scoring(detector, "head")
    assert detector.rescorer is None and detector.rescore is None and detector.region_scoring is None
    # A model saved with no scoring of its own gets the shipped defaults, still with no reference names.
    apply_scoring(detector, "region")
    assert type(detector.rescorer) is RegionPoolScorer and detector.rescorer.topk == 32
    x = torch.randn(1, 3, INPUT, INPUT)
    for mode in SCORING_MODES:  # every mode answers a call
        apply_scoring(detector, mode)
        assert detector.predict(x, ["circle", "star"])["logits"].shape[-1] == 2


def test_a_tower_that_cannot_pool_is_refused_and_left_as_saved(tiny_clip_dir):
    vit = Detector.from_clip(str(tiny_clip_dir), image_size=64).eval()
    for mode in ("crops", "region"):
        with pytest.raises(ValueError, match=rf"--scoring {mode}: .*use --scoring model or head"):
            apply_scoring(vit, mode)
        assert vit.rescorer is None and vit.rescore is None and vit.region_scoring is None
    with pytest.raises(ValueError, match="'bogus' is not a scoring mode"):
        apply_scoring(vit, "bogus")


def test_detect_cli_scores_with_crops_and_refuses_a_vit_in_one_line(tmp_path, tiny_clip_dir):
    out = tmp_path / "crops.json"
    done = ovdet("detect", "ovdet/assets/scene.png", "-q", "star", "-q", "circle", "--scoring", "crops",
                 "--threshold", "0", "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert json.loads(out.read_text())  # detections, named by crops
    vit = Detector.from_clip(str(tiny_clip_dir), image_size=64).save_pretrained(tmp_path / "vit")
    refused = ovdet("detect", "ovdet/assets/scene.png", "-q", "star", "--model", str(vit), "--scoring", "crops")
    assert refused.returncode == 2
    assert "--scoring crops" in refused.stderr and len(refused.stderr.strip().splitlines()) <= 2


def test_eval_cli_scores_as_asked_and_records_it(resnet_dir, tmp_path):  # noqa: F811
    model = Detector.from_clip(str(resnet_dir), image_size=INPUT, region_scoring=SCORING).save_pretrained(tmp_path / "m")
    data = tmp_path / "data"
    data.mkdir()
    Image.new("RGB", (64, 48), (200, 30, 30)).save(data / "a.png")
    gt = {"images": [{"id": 1, "file_name": "a.png", "width": 64, "height": 48}],
          "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [4, 4, 30, 30], "area": 900, "iscrowd": 0}],
          "categories": [{"id": 1, "name": "circle", "split": "base"}, {"id": 2, "name": "star", "split": "novel"}]}
    (data / "gt.json").write_text(json.dumps(gt))
    for mode in ("crops", "head"):
        out = tmp_path / f"{mode}.json"
        done = ovdet("eval", "--model", str(model), "--annotations", str(data / "gt.json"), "--images", str(data),
                     "--scoring", mode, "--workers", "0", "--out", str(out), "--no-progress")
        assert done.returncode == 0, done.stderr
        assert json.loads(out.read_text())["meta"]["scoring"] == mode
