"""Class-agnostic proposals as the dense-distillation stage's boxes (CLIPSelf's region proposals)."""

from __future__ import annotations

from functools import partial

import pytest
import torch

from torchvision.ops import box_iou

from ovdet.distill.module import DenseDistillModule
from ovdet.distill.proposal_boxes import DetectorProposals
from ovdet.distill.region_tower import region_tower
from ovdet.errors import OvdetError
from ovdet.models.detector import Detector
from ovdet.towers.loader import load_clip
from test_dense_distill import INPUT, resnet_dir  # noqa: F401  (the tiny ResNet CLIP fixture)


@pytest.fixture
def detector_dir(resnet_dir, tmp_path):  # noqa: F811
    torch.manual_seed(0)
    det = Detector.from_clip(str(resnet_dir), image_size=INPUT, feature_stride=16)
    with torch.no_grad():
        det.head.objectness_mlp.layers[-1].bias.fill_(0.0)  # every region proposes (p = 0.5) ...
        det.head.box_mlp.layers[-1].bias.copy_(torch.tensor([0.0, 0.0, 1.0, 1.0]))  # ... a box wider than its cell
    return det.save_pretrained(tmp_path / "det")


def test_proposals_are_few_inside_the_image_and_not_duplicated(detector_dir, one_thread):
    clip = load_clip(detector_dir / "clip")
    mean, std = clip.backbone.image_mean, clip.backbone.image_std
    proposer = DetectorProposals(str(detector_dir), INPUT, mean, std, threshold=0.3, max_boxes=3, nms_iou=0.5)
    boxes = proposer(torch.randn(2, 3, INPUT, INPUT))
    assert len(boxes) == 2
    for b in boxes:
        assert 1 <= len(b) <= 3 and b.shape[-1] == 4
        assert (b >= 0).all() and (b <= INPUT).all() and (b[:, 2:] > b[:, :2]).all()
        overlap = torch.triu(box_iou(b, b), diagonal=1)
        assert (overlap <= 0.5 + 1e-6).all()  # NMS kept no pair above 0.5
    none = DetectorProposals(str(detector_dir), INPUT, mean, std, threshold=0.9)
    assert all(len(b) == 0 for b in none(torch.randn(2, 3, INPUT, INPUT)))  # nothing is object-like enough


def test_images_without_proposals_fall_back_to_grid_cells(detector_dir, resnet_dir, one_thread):  # noqa: F811
    clip = load_clip(detector_dir / "clip")
    mean, std = clip.backbone.image_mean, clip.backbone.image_std
    none = DetectorProposals(str(detector_dir), INPUT, mean, std, threshold=0.9)
    module = DenseDistillModule(region_tower(load_clip(resnet_dir)), partial(torch.optim.AdamW, lr=1e-4),
                                context=0.2, proposals=none)
    boxes = module.boxes(torch.randn(2, 3, INPUT, INPUT), None)
    assert all(len(b) >= 1 for b in boxes)  # a grid cell or more per image, never an empty batch
    loss = module.distill_loss(torch.randn(2, 3, INPUT, INPUT), boxes)
    assert torch.isfinite(loss) and 0 <= float(loss.detach()) <= 2


def test_a_detector_that_reads_images_otherwise_is_refused_in_one_line(detector_dir):
    with pytest.raises(OvdetError, match="module.proposals") as err:
        DetectorProposals(str(detector_dir), 2 * INPUT, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    assert "\n" not in str(err.value)
    with pytest.raises(OvdetError, match="max_proposals"):
        DetectorProposals(str(detector_dir), INPUT, (0.5,) * 3, (0.5,) * 3, max_boxes=0)
