"""One-pass region scoring (RegionPoolScorer): boxes pooled from the pass's own region map, never re-encoded."""

from __future__ import annotations

import pytest
import torch

from ovdet.models.crop_rescorer import CropRescorer
from ovdet.models.detector import Detector
from ovdet.models.head import MASKED_LOGIT
from ovdet.models.region_pool_scorer import RegionPoolScorer
from test_dense_distill import INPUT, resnet_dir  # noqa: F401  (the tiny ResNet CLIP fixture)

SCORING = {"topk": 3, "weight": 0.4, "novel_weight": 0.7, "context": 0.2, "reference": ["circle", "square"]}


@pytest.fixture
def detector(resnet_dir):  # noqa: F811
    torch.manual_seed(0)
    det = Detector.from_clip(str(resnet_dir), image_size=INPUT, region_scoring=SCORING).eval()
    with torch.no_grad():
        for p in det.head.parameters():
            p.add_(0.1 * torch.randn_like(p))  # a head that proposes distinct boxes
    return det


def test_whole_input_box_pooled_is_the_crop_embedding(detector, one_thread):
    # At the tower's resolution a box over the whole input samples every layer3 cell at its centre, so the
    # pooled embedding runs exactly the layers the crop does: CLIP's own image embedding.
    x = torch.randn(2, 3, INPUT, INPUT)
    whole = torch.tensor([[[0.5, 0.5, 1.0, 1.0]]]).expand(2, 1, 4)  # cxcywh 0..1
    pooled_scorer, crop_scorer = RegionPoolScorer(context=0.0), CropRescorer(context=0.0)
    with torch.no_grad():
        region_map = detector.backbone(x).region_map  # [2, C3, 4, 4]
        pooled = pooled_scorer.region_embeddings(detector.backbone, x, whole, region_map)
        crops = crop_scorer.region_embeddings(detector.backbone, x, whole)
        image = torch.nn.functional.normalize(detector.clip.model.encode_image(x), dim=-1)
    torch.testing.assert_close(pooled[:, 0], image, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(crops[:, 0], image, rtol=1e-5, atol=1e-5)
    # Smaller boxes differ from their crops (the map saw the whole image), but are unit vectors of the same space.
    boxes = torch.tensor([[[0.3, 0.3, 0.2, 0.4], [0.7, 0.6, 0.3, 0.3]]]).expand(2, 2, 4)
    with torch.no_grad():
        small = pooled_scorer.region_embeddings(detector.backbone, x, boxes)  # map computed from the pixels
    assert small.shape == (2, 2, image.shape[-1])
    torch.testing.assert_close(small.norm(dim=-1), torch.ones(2, 2))


def test_detector_scores_in_one_pass_without_crops(detector, monkeypatch, one_thread):
    calls = []
    monkeypatch.setattr(detector.backbone, "encode_crops", lambda crops: calls.append(crops) or 1 / 0)
    forward = detector.backbone.forward
    monkeypatch.setattr(detector.backbone, "forward", lambda x: calls.append(x) or forward(x))
    out = detector.predict(torch.randn(1, 3, INPUT, INPUT), ["circle", "star"])
    assert len(calls) == 1  # one tower pass, no crop encoded
    logits = out["logits"][0]  # [P, 2]
    scored = (logits > MASKED_LOGIT).all(-1)  # [P]
    assert int(scored.sum()) == SCORING["topk"]
    top = out["objectness"][0].topk(SCORING["topk"]).indices
    assert set(top.tolist()) == set(scored.nonzero()[:, 0].tolist())  # the k most object-like regions
    assert ((logits[scored].sigmoid() > 0) & (logits[scored].sigmoid() < 1)).all()
    assert "region_map" not in out


def test_base_names_and_novel_names_get_their_own_weight():
    class Colours:
        crop_size = 8

        def encode_crops(self, crops):  # [N, 3, c, c] -> [N, 3]: the mean colour
            return crops.mean(dim=(2, 3))

    pixels = torch.zeros(1, 3, 32, 32)
    pixels[0, 0, :16, :16] = 1.0  # a red square
    out = {"pred_boxes": torch.tensor([[[0.25, 0.25, 0.5, 0.5]]]), "objectness": torch.tensor([[0.5]])}
    queries, reference = torch.eye(3)[:2], torch.eye(3)[:1]  # red (a reference, base name) and green (novel)
    obj = torch.tensor(0.5).sigmoid()
    # Base weight 0: the red query's score is objectness alone; novel weight 1: green's is its probability alone.
    rescorer = CropRescorer(topk=1, weight=0.0, novel_weight=1.0, context=0.0, logit_scale=10.0)
    probs = (10.0 * torch.nn.functional.normalize(torch.tensor([1.0, 0.0, 0.0]), dim=0) @ queries.T).softmax(-1)
    scores = rescorer(Colours(), pixels, out, queries, reference)[0, 0].sigmoid()
    torch.testing.assert_close(scores, torch.stack([obj, probs[1]]), rtol=1e-4, atol=1e-5)
    # Without a reference no query is a base name: both get the novel weight.
    scores = rescorer(Colours(), pixels, out, queries)[0, 0].sigmoid()
    torch.testing.assert_close(scores, probs, rtol=1e-4, atol=1e-5)


def test_region_scoring_is_saved_and_crop_rescoring_wins_while_set(detector, tmp_path):
    detector.save_pretrained(tmp_path / "m")
    loaded = Detector.from_pretrained(tmp_path / "m")
    assert loaded.region_scoring == SCORING and loaded.rescore is None
    assert isinstance(loaded.rescorer, RegionPoolScorer) and loaded.rescorer.novel_weight == 0.7
    loaded.set_rescore({"topk": 3})
    assert type(loaded.rescorer) is CropRescorer  # crops while rescore is set ...
    loaded.set_rescore(None)
    assert isinstance(loaded.rescorer, RegionPoolScorer)  # ... and the one-pass scoring again after
    loaded.set_region_scoring(None)
    assert loaded.rescorer is None


@pytest.mark.parametrize("bad, message", [
    ({"topk": 0}, "region_scoring.topk"),
    ({"novel_weight": 1.5}, "region_scoring.novel_weight"),
    ({"weights": 0.5}, "unknown key"),
])
def test_bad_region_scoring_is_refused_naming_the_key(resnet_dir, bad, message):  # noqa: F811
    with pytest.raises(ValueError, match=message):
        Detector.from_clip(str(resnet_dir), image_size=INPUT, region_scoring=bad)


def test_a_vit_tower_refuses_region_scoring_in_one_line(tiny_clip_dir):
    with pytest.raises(ValueError, match="pools its own regions") as err:
        Detector.from_clip(str(tiny_clip_dir), image_size=32, region_scoring={"topk": 4})
    assert "\n" not in str(err.value)


def test_the_embedded_model_scores_in_one_pass_and_the_benchmark_times_its_other_paths():
    from ovdet.assets import DEFAULT_MODEL
    from ovdet.benchmark.models import embedded_scoring

    if not (DEFAULT_MODEL / "config.json").is_file():
        pytest.skip("no embedded model in this checkout")
    shipped = Detector.from_pretrained(DEFAULT_MODEL)
    assert shipped.rescore is None and isinstance(shipped.rescorer, RegionPoolScorer)  # issue N: one pass
    reference = shipped.region_scoring["reference"]
    crops = Detector.from_pretrained(DEFAULT_MODEL)
    embedded_scoring(crops, "embedded-crops")
    assert type(crops.rescorer) is CropRescorer and crops.rescorer.reference == reference
    assert crops.rescorer.weight == 0.8 and crops.rescorer.topk == 32
    dense = Detector.from_pretrained(DEFAULT_MODEL)
    embedded_scoring(dense, "embedded-dense")
    assert dense.rescorer is None
