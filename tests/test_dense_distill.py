"""The label-free dense-distillation stage (CLIPSelf) on tiny towers: region embeddings, boxes, training, accuracy."""

from __future__ import annotations

import copy
from functools import partial
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from ovdet.boxes import square_context
from ovdet.data.shapeworld import SceneConfig, load_split, render_scene
from ovdet.distill.module import DenseDistillModule
from ovdet.distill.random_boxes import grid_boxes, random_grid_boxes
from ovdet.distill.region_embedding import crop_embeddings, dense_region_embeddings
from ovdet.distill.region_tower import ResNetRegionTower, ViTRegionTower, region_tower
from ovdet.distill.zero_shot import (
    box_pooled_accuracy,
    centre_cell_accuracy,
    centre_cell_embeddings,
    crop_accuracy,
    name_embeddings,
)
from ovdet.errors import OvdetError
from ovdet.preprocess import ImagePreprocessor
from ovdet.towers.clip_saving import save_clip
from ovdet.towers.loader import load_clip
from ovdet.towers.open_clip_io import save_open_clip

INPUT = 64  # the tiny ResNet's training resolution; the tiny ViT (32 px) runs it with interpolated positions


@pytest.fixture(scope="module")
def resnet_dir(tmp_path_factory):
    from test_open_clip_tower import tiny_resnet_clip

    # BatchNorm statistics measured on scenes, as a trained tower has them: with the init's (mean 0, var 1)
    # the layer4 features are ~1e-4 against a positional embedding of ~0.06, every embedding is the same
    # vector, and crops and regions agree to 1e-6 before any distillation.
    model = tiny_resnet_clip()
    for bn in model.visual.modules():
        if isinstance(bn, torch.nn.BatchNorm2d):
            bn.momentum = None  # a plain average over the calibration batch
            bn.reset_running_stats()
    model.train()
    with torch.no_grad():
        model.visual(_scenes(6, first_seed=100)[0])
    return save_open_clip(model.eval(), tmp_path_factory.mktemp("rn") / "clip")


def _scenes(n: int, size: int = INPUT, first_seed: int = 0):
    """n tiny ShapeWorld scenes: pixels [n, 3, S, S] (padded square), boxes and label ids per image."""
    split = load_split()
    pre = ImagePreprocessor(size, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    pixels, boxes, labels, hw = [], [], [], []
    for seed in range(first_seed, first_seed + n):
        image, scene = render_scene(seed, SceneConfig(min_size=64, max_size=96, max_objects=3))
        scale = size / max(scene.width, scene.height)
        pixels.append(pre.to_tensor(image))
        boxes.append(torch.tensor([o.box_xyxy for o in scene.objects], dtype=torch.float32).reshape(-1, 4) * scale)
        labels.append(torch.tensor([split.shapes.index(o.shape) for o in scene.objects], dtype=torch.long))
        hw.append([scene.height * scale, scene.width * scale])
    return torch.stack(pixels), boxes, labels, torch.tensor(hw), list(split.shapes)


def test_resnet_whole_image_box_is_clips_own_image_embedding(resnet_dir, one_thread):
    # At the training resolution the layer3 map is twice the attention pool's grid (4 x 4 here); RoIAlign of
    # the whole-input box to that grid samples each cell at its centre, so the C4 pooling (layer4 and the
    # attention pool on the box) gives back exactly CLIP's image embedding, and the crop of the whole input
    # is the input itself.
    clip = load_clip(resnet_dir)
    tower = region_tower(clip)
    assert isinstance(tower, ResNetRegionTower) and tower.roi_size == 4 and tower.crop_size == INPUT
    x = torch.randn(2, 3, INPUT, INPUT)
    whole = [torch.tensor([[0.0, 0.0, INPUT, INPUT]])] * 2
    with torch.no_grad():
        image = torch.nn.functional.normalize(clip.model.encode_image(x), dim=-1)  # [2, E]
        torch.testing.assert_close(dense_region_embeddings(tower, x, whole), image, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(crop_embeddings(tower, x, whole), image, rtol=1e-5, atol=1e-5)
        boxes = [torch.tensor([[0.0, 0.0, 20.0, 30.0], [10.0, 5.0, 60.0, 40.0], [3.0, 3.0, 9.0, 9.0]]),
                 torch.tensor([[32.0, 32.0, 64.0, 64.0]])]
        regions = dense_region_embeddings(tower, x, boxes)
        crops = crop_embeddings(tower, x, boxes)
        cells = tower.cell_embeddings(torch.randn(1, 3, 2 * INPUT, 2 * INPUT))
    assert regions.shape == crops.shape == (4, 24) and cells.shape == (1, 24, 4, 4)
    torch.testing.assert_close(regions.norm(dim=-1), torch.ones(4))
    torch.testing.assert_close(crops.norm(dim=-1), torch.ones(4))


def test_vit_region_pooling_is_the_mean_of_projected_cells(tiny_clip_dir, one_thread):
    # CLIPSelf: every patch token through the final LayerNorm and projection, then RoIAlign to 1 x 1. A box
    # on exactly one cell gives that cell; the whole input gives the mean of all cells (adaptive sampling
    # takes one sample per cell centre). Crops go through the class token, CLIP's image embedding.
    clip = load_clip(tiny_clip_dir)
    tower = region_tower(clip)
    assert isinstance(tower, ViTRegionTower) and tower.crop_size == 32
    x = torch.randn(2, 3, INPUT, INPUT)  # 8 x 8 patches of 8 px
    with torch.no_grad():
        cells = tower.cell_embeddings(x)  # [2, E, 8, 8]
        one_cell = dense_region_embeddings(tower, x, [torch.tensor([[16.0, 8.0, 24.0, 16.0]]), torch.zeros(0, 4)])
        whole = dense_region_embeddings(tower, x, [torch.tensor([[0.0, 0.0, INPUT, INPUT]])] * 2)
        crops = crop_embeddings(tower, x, [torch.tensor([[0.0, 0.0, INPUT, INPUT]])] * 2)
        # centres (20, 11) and (60, 3): cells (row 1, col 2) of image 0 and (row 0, col 7) of image 1
        centre_boxes = [torch.tensor([[10.0, 2.0, 30.0, 20.0]]), torch.tensor([[56.0, 0.0, 64.0, 6.0]])]
        centre = centre_cell_embeddings(tower, x, centre_boxes)
        small = torch.nn.functional.interpolate(x, size=32, mode="bilinear", antialias=True, align_corners=False)
        image = clip.model.get_image_features(pixel_values=small)
    image = image if torch.is_tensor(image) else image.pooler_output
    assert cells.shape == (2, 24, 8, 8) and one_cell.shape == (1, 24) and whole.shape == crops.shape == (2, 24)
    norm = torch.nn.functional.normalize
    torch.testing.assert_close(one_cell[0], norm(cells[0, :, 1, 2], dim=0), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(whole, norm(cells.mean((2, 3)), dim=-1), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(centre, norm(torch.stack([cells[0, :, 1, 2], cells[1, :, 0, 7]]), dim=-1))
    # roi_align's adaptive downscale (2 x 2 samples per crop pixel) is a box filter, not antialiased bilinear
    assert (crops * norm(image, dim=-1)).sum(-1).min() > 0.9


@pytest.fixture(scope="module")
def siglip_dir(tmp_path_factory):
    from test_siglip_tower import save_tiny_siglip

    return save_tiny_siglip(tmp_path_factory.mktemp("siglip") / "clip")


def test_siglip_whole_input_box_is_its_own_image_embedding(siglip_dir, one_thread):
    # At SigLIP's resolution (32 px, 4 x 4 tokens) a whole-input box samples every token at its centre, and the
    # MAP head over those tokens is exactly how SigLIP pools its image embedding; crops of the whole input
    # are the input itself.
    from ovdet.distill.region_tower import SiglipRegionTower

    clip = load_clip(siglip_dir)
    tower = region_tower(clip)
    assert isinstance(tower, SiglipRegionTower) and tower.roi_size == 4 and tower.crop_size == 32
    x = torch.randn(2, 3, 32, 32)
    whole = [torch.tensor([[0.0, 0.0, 32.0, 32.0]])] * 2
    with torch.no_grad():
        image = torch.nn.functional.normalize(clip.model.vision_model(pixel_values=x).pooler_output, dim=-1)
        torch.testing.assert_close(dense_region_embeddings(tower, x, whole), image, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(crop_embeddings(tower, x, whole), image, rtol=1e-5, atol=1e-5)
        big = torch.randn(1, 3, 64, 64)  # 8 x 8 tokens: boxes pool their own tokens, cells are one each
        regions = dense_region_embeddings(tower, big, [torch.tensor([[0.0, 0.0, 20.0, 30.0], [10.0, 5.0, 60.0, 40.0]])])
        cells = tower.cell_embeddings(big)
    assert regions.shape == (2, 32) and cells.shape == (1, 32, 8, 8)
    torch.testing.assert_close(regions.norm(dim=-1), torch.ones(2))


def test_region_tower_refuses_a_tower_it_cannot_pool():
    clip = SimpleNamespace(backbone=torch.nn.Identity(), model=torch.nn.Module(), reference="x", format="siglip")
    with pytest.raises(OvdetError, match="no region pooling"):
        region_tower(clip)


def test_random_grid_boxes_tile_the_image_and_follow_the_seed():
    seen = set()
    gen = torch.Generator().manual_seed(3)
    for _ in range(40):
        boxes = random_grid_boxes(48.0, 64.0, 3, gen)
        area = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
        torch.testing.assert_close(area.sum(), torch.tensor(48.0 * 64.0))
        assert boxes[:, :2].min() == 0 and boxes[:, 2].max() == 64 and boxes[:, 3].max() == 48
        seen.add(len(boxes))
    assert seen <= {1, 2, 3, 4, 6, 9} and len(seen) >= 4  # m * n for m, n in 1..3
    again = [random_grid_boxes(48.0, 64.0, 3, torch.Generator().manual_seed(3)) for _ in range(2)]
    assert torch.equal(again[0], again[1])
    assert grid_boxes(10.0, 20.0, 1, 2).tolist() == [[0.0, 0.0, 10.0, 10.0], [10.0, 0.0, 20.0, 10.0]]
    with pytest.raises(OvdetError, match="max_split=0"):
        random_grid_boxes(48.0, 64.0, 0, gen)


def _fit(tower, pixels, hw, steps: int, trainable_layers: int, lr: float):
    module = DenseDistillModule(tower, partial(torch.optim.AdamW, lr=lr, weight_decay=0.0),
                                trainable_layers=trainable_layers, max_split=3, seed=0)
    teacher_before = copy.deepcopy(module.teacher.state_dict())
    student_before = copy.deepcopy(module.student.state_dict())
    fixed = [grid_boxes(float(h), float(w), 2, 2) for h, w in hw.tolist()]
    with torch.no_grad():
        before = float(module.distill_loss(pixels, fixed))
    data = [{"pixel_values": pixels[i : i + 2], "image_hw": hw[i : i + 2]} for i in range(0, len(pixels), 2)]
    trainer = L.Trainer(max_steps=steps, accelerator="cpu", enable_progress_bar=False, logger=False,
                        enable_checkpointing=False, enable_model_summary=False)
    trainer.fit(module, DataLoader(data, batch_size=None, shuffle=False))
    with torch.no_grad():
        after = float(module.distill_loss(pixels, fixed))
    return module, before, after, teacher_before, student_before, trainer


@pytest.mark.parametrize("kind", ["resnet", "vit", "siglip"])
def test_distillation_lowers_the_loss_and_keeps_the_teacher(kind, resnet_dir, tiny_clip_dir, siglip_dir, tmp_path,
                                                            one_thread):
    torch.manual_seed(0)
    clip = load_clip({"resnet": resnet_dir, "vit": tiny_clip_dir, "siglip": siglip_dir}[kind])
    tower = region_tower(clip)
    pixels, _, _, hw, _ = _scenes(6)
    module, before, after, teacher_before, student_before, trainer = _fit(tower, pixels, hw, 40, 2, 3e-3)
    assert trainer.global_step == 40
    assert "train/loss_distill" in trainer.callback_metrics
    assert after < 0.8 * before, (before, after)
    # The teacher is bit-identical, frozen and in eval mode; the student is the loaded CLIP's own tower.
    teacher_after = module.teacher.state_dict()
    assert all(torch.equal(teacher_before[k], teacher_after[k]) for k in teacher_before)
    assert not any(p.requires_grad for p in module.teacher.parameters()) and not module.teacher.training
    moved = [k for k, v in module.student.state_dict().items() if not torch.equal(v, student_before[k])]
    assert moved and module.student.backbone.vision is clip.backbone.vision
    # The distilled tower is written back in its own format (open_clip folder / save_pretrained) and reloads.
    save_clip(clip, tmp_path / "distilled")
    reloaded = region_tower(load_clip(tmp_path / "distilled"))
    boxes = [torch.tensor([[0.0, 0.0, 40.0, 50.0], [8.0, 16.0, 64.0, 64.0]])] * 2
    with torch.no_grad():
        torch.testing.assert_close(dense_region_embeddings(reloaded, pixels[:2], boxes),
                                   dense_region_embeddings(module.student.eval(), pixels[:2], boxes))


def test_validation_loss_and_resumed_boxes(resnet_dir, one_thread):
    # val/loss_distill is the loss on each image's fixed 2 x 2 grid; a checkpoint carries the box generator, so
    # a resumed run draws the boxes the uninterrupted one would have.
    pixels, _, _, hw, _ = _scenes(2)
    make = partial(DenseDistillModule, optimizer=partial(torch.optim.AdamW, lr=1e-3), max_split=6, seed=5)
    module = make(region_tower(load_clip(resnet_dir)))
    trainer = L.Trainer(accelerator="cpu", enable_progress_bar=False, logger=False, enable_model_summary=False)
    trainer.validate(module, DataLoader([{"pixel_values": pixels, "image_hw": hw}], batch_size=None))
    with torch.no_grad():
        expected = module.distill_loss(pixels, [grid_boxes(float(h), float(w), 2, 2) for h, w in hw.tolist()])
    torch.testing.assert_close(trainer.callback_metrics["val/loss_distill"], expected)
    module.boxes(pixels, hw)  # one draw, as after a training step
    checkpoint: dict = {}
    module.on_save_checkpoint(checkpoint)
    resumed = make(region_tower(load_clip(resnet_dir)))
    resumed.on_load_checkpoint(checkpoint)
    for a, b in zip(module.boxes(pixels, hw), resumed.boxes(pixels, hw)):
        assert torch.equal(a, b)


def test_distillation_refuses_training_nothing(resnet_dir):
    tower = region_tower(load_clip(resnet_dir))
    with pytest.raises(OvdetError, match="trainable_layers=0"):
        DenseDistillModule(tower, partial(torch.optim.AdamW, lr=1e-3), trainable_layers=0)


def test_zero_shot_accuracies_on_tiny_shapeworld(resnet_dir, one_thread):
    # Random weights name nothing: only the measure is checked, against the same argmax done by hand.
    clip = load_clip(resnet_dir)
    tower = region_tower(clip)
    pixels, boxes, labels, _, names = _scenes(6)
    args = (tower, clip.text_tower, pixels, boxes, names, labels)
    pooled, centre, crops = box_pooled_accuracy(*args, "photo"), centre_cell_accuracy(*args), crop_accuracy(*args)
    assert all(0.0 <= a <= 1.0 for a in (pooled, centre, crops))
    with torch.no_grad():
        photo, clip7 = (name_embeddings(clip.text_tower, names, t) for t in ("photo", "clip7"))  # [16, E] each
        by_hand = {
            "pooled": (dense_region_embeddings(tower, pixels, boxes) @ photo.T).argmax(-1),
            "crops": (crop_embeddings(tower, pixels, boxes) @ clip7.T).argmax(-1),
        }
    truth = torch.cat(labels)
    assert pooled == pytest.approx(float((by_hand["pooled"] == truth).float().mean()))
    assert crops == pytest.approx(float((by_hand["crops"] == truth).float().mean()))
    with pytest.raises(OvdetError, match="labels for"):
        box_pooled_accuracy(tower, clip.text_tower, pixels, boxes, names, labels[:-1])


@pytest.mark.parametrize("kind", ["resnet", "vit"])
def test_distilled_tower_names_boxes_as_its_crops_do(kind, resnet_dir, tiny_clip_dir, one_thread):
    # Trained on random grid boxes, measured on the scenes' object boxes (never trained on). Random text
    # weights make the true names meaningless, so each box's label is the name the frozen tower gives its crop
    # (the teacher's view). The ViT target: box-pooled accuracy rises; for both kinds the pooled
    # embedding moves toward the crop's. Measured here: ViT accuracy 0.0 -> 0.67, cosine 0.17 -> 0.93; ResNet
    # cosine 0.48 -> 0.69, accuracy 0.58 -> 0.50 (one of its 12 boxes either way: too few to assert).
    torch.manual_seed(0)
    clip = load_clip(resnet_dir if kind == "resnet" else tiny_clip_dir)
    tower = region_tower(clip)
    pixels, boxes, _, hw, names = _scenes(6)
    with torch.no_grad():
        crops = crop_embeddings(tower, pixels, boxes)  # [K, E], the frozen tower's: the teacher's targets
        crop_labels = list((crops @ name_embeddings(clip.text_tower, names, "clip7").T).argmax(-1).split(
            [len(b) for b in boxes]))
        cos_before = float((dense_region_embeddings(tower, pixels, boxes) * crops).sum(-1).mean())
    args = (clip.text_tower, pixels, boxes, names, crop_labels)
    before = box_pooled_accuracy(tower, *args)
    _fit(tower, pixels, hw, 40, 2, 3e-3)
    after = box_pooled_accuracy(tower, *args)
    with torch.no_grad():
        cos_after = float((dense_region_embeddings(tower, pixels, boxes) * crops).sum(-1).mean())
    assert cos_after > cos_before + 0.05, (cos_before, cos_after)
    if kind == "vit":
        assert after > before + 0.2, (before, after)


def test_names_term_adds_the_kl_of_the_teachers_ranking(resnet_dir, one_thread):
    # loss = 1 - cos + w * KL(teacher || student) over the names' softmax; the KL is 0 when they agree.
    from ovdet.distill.stage import DistillTower, distill_module

    pixels, _, _, hw, _ = _scenes(2)
    boxes = [grid_boxes(float(h), float(w), 2, 2) for h, w in hw.tolist()]
    tower = DistillTower(str(resnet_dir), INPUT)
    module = distill_module(tower, optimizer=partial(torch.optim.AdamW, lr=1e-3), names=["circle", "square", "star"],
                            names_weight=2.0, context=0.2)
    names = module.name_embeddings
    assert names.shape[0] == 3 and torch.allclose(names.norm(dim=-1), torch.ones(3))
    assert module.names_scale == pytest.approx(float(tower.clip.model.logit_scale.detach().exp()))
    plain = DenseDistillModule(region_tower(load_clip(resnet_dir)), partial(torch.optim.AdamW, lr=1e-3), context=0.2)
    with torch.no_grad():
        squares = [square_context(b, 0.2) for b in boxes]
        target = crop_embeddings(module.teacher, pixels, squares)
        regions = dense_region_embeddings(module.student, pixels, squares)
        kl = torch.nn.functional.kl_div((module.names_scale * regions @ names.T).log_softmax(-1),
                                        (module.names_scale * target @ names.T).log_softmax(-1),
                                        log_target=True, reduction="batchmean")
        assert kl > 0
        torch.testing.assert_close(module.distill_loss(pixels, boxes), plain.distill_loss(pixels, boxes) + 2.0 * kl)
        assert float(module.names_loss(target, target)) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(OvdetError, match="names_weight=1.0"):
        DenseDistillModule(region_tower(load_clip(resnet_dir)), partial(torch.optim.AdamW, lr=1e-3), names_weight=1.0)
