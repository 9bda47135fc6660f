import pytest
import torch

from ovdet.models.crop_rescorer import CropRescorer
from ovdet.models.head import MASKED_LOGIT


class FakeTower:
    """Encodes a crop as its mean colour: red crops -> query 0, green crops -> query 1."""

    crop_size = 8

    def encode_crops(self, crops):  # [N, 3, c, c] -> [N, 3]
        return crops.mean(dim=(2, 3))


def _scene():
    pixels = torch.zeros(1, 3, 32, 32)
    pixels[0, 0, :16, :16] = 1.0  # red square top-left
    pixels[0, 1, 16:, 16:] = 1.0  # green square bottom-right
    boxes = torch.tensor([[[0.25, 0.25, 0.5, 0.5], [0.75, 0.75, 0.5, 0.5], [0.5, 0.5, 0.1, 0.1]]])  # cxcywh
    objectness = torch.tensor([[2.0, 1.0, -3.0]])
    return pixels, {"pred_boxes": boxes, "objectness": objectness}


def test_crops_decide_the_query_and_objectness_the_rank():
    pixels, out = _scene()
    queries = torch.eye(3)  # query 0 = red, 1 = green, 2 = blue
    logits = CropRescorer(topk=2, weight=0.5, context=0.0, logit_scale=20.0)(FakeTower(), pixels, out, queries)
    assert logits.shape == (1, 3, 3)
    assert logits[0, 0].argmax() == 0 and logits[0, 1].argmax() == 1
    assert logits[0, 0].max() > logits[0, 1].max()  # higher objectness ranks first
    assert (logits[0, 2] == MASKED_LOGIT).all()  # outside the top-k: no score


def test_weight_zero_is_objectness_alone():
    pixels, out = _scene()
    logits = CropRescorer(topk=3, weight=0.0, logit_scale=20.0)(FakeTower(), pixels, out, torch.eye(3))
    assert torch.allclose(logits[0].sigmoid(), out["objectness"][0].sigmoid()[:, None].expand(3, 3), atol=1e-5)


@pytest.mark.parametrize("kwargs", [{"topk": 0}, {"weight": 1.5}, {"context": -0.1}])
def test_bad_settings(kwargs):
    with pytest.raises(ValueError):
        CropRescorer(**kwargs)


def test_vit_tower_refuses_crop_rescoring_with_a_clear_error(tiny_clip_dir):
    from ovdet.models.detector import Detector

    det = Detector.from_clip(str(tiny_clip_dir), image_size=32)
    with pytest.raises(ValueError, match="encode_crops"):
        det.set_rescore({"topk": 4})


def test_reference_names_compete_but_are_not_reported():
    pixels, out = _scene()
    rescorer = CropRescorer(topk=2, weight=1.0, context=0.0, logit_scale=20.0, reference=["Red ", "green"])
    red = torch.eye(3)[:1]  # one query: "red"
    alone = rescorer(FakeTower(), pixels, out, red)  # [1, 3, 1]
    # A single query wins every crop with probability 1, the green square's included ...
    assert torch.allclose(alone[0, :2].sigmoid(), torch.ones(2, 1), atol=1e-5)
    # ... until the other reference colour competes: the green crop now scores low, the red one stays high.
    with_ref = rescorer(FakeTower(), pixels, out, red, torch.eye(3)[1:2])
    assert with_ref.shape == (1, 3, 1)
    assert with_ref[0, 0, 0].sigmoid() > 0.9 and with_ref[0, 1, 0].sigmoid() < 0.1
    assert rescorer.competitors(["red", "blue"]) == ["green"]  # an asked name is not its own competitor


class KeepCrops(FakeTower):
    crop_size = 16

    def encode_crops(self, crops):  # the crop itself, flattened: shows exactly what CLIP would see
        return crops.flatten(1)


def test_crops_are_squares_around_the_box_as_clip_saw_its_objects():
    """A 2:1 box is cropped as the square around it, not stretched into one: a wide bar keeps its
    shape, and the square of its long side gives the same crop."""
    pixels = torch.zeros(1, 3, 32, 32)
    pixels[0, :, 12:20, 4:28] = 1.0  # a 24 x 8 bar
    rescorer = CropRescorer(context=0.0)
    wide = torch.tensor([[[0.5, 0.5, 0.75, 0.25]]])  # cxcywh: tight around the bar
    square = torch.tensor([[[0.5, 0.5, 0.75, 0.75]]])
    a, b = (rescorer.crop_embeddings(KeepCrops(), pixels, box) for box in (wide, square))
    assert torch.allclose(a, b, atol=1e-6)
    crop = a.view(3, 16, 16)[0] > 0  # the bar stays three times wider than high
    rows, cols = crop.any(1).sum().item(), crop.any(0).sum().item()
    assert cols >= 2.5 * rows
