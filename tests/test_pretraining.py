"""CLIP pretraining: the contrastive loss, the pair pool, zero-shot metrics, and a tiny end-to-end run."""

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ovdet.towers.loader import load_clip
from ovdet.models.detector import Detector
from ovdet.towers.open_clip_io import build_open_clip, open_clip_tokenizer
from ovdet.pretraining.contrastive_loss import clip_contrastive_loss
from ovdet.pretraining.pair_data import ImageTextPairs, PairCollate
from ovdet.pretraining.positive_pairs import positive_pairs
from ovdet.pretraining.pair_pool import PoolSpec, cached_pool, render_pool
from ovdet.pretraining.zero_shot import ZeroShotTask, zero_shot_metrics

CONF = Path(__file__).resolve().parents[1] / "conf"


def test_contrastive_steps_lower_the_loss():
    torch.manual_seed(0)
    model = build_open_clip(
        16, {"layers": [1, 1, 1, 1], "width": 8, "image_size": 32, "head_width": 16},
        {"context_length": 12, "width": 32, "heads": 1, "layers": 1},
    )
    images = torch.randn(8, 3, 32, 32)
    tokens = open_clip_tokenizer(12)([f"a photo of a {s}." for s in ("star", "ring", "heart", "cross", "arrow", "circle", "square", "oval")])
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(8):
        loss = clip_contrastive_loss(model.encode_image(images), model.encode_text(tokens), model.logit_scale)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses


def test_loss_spreads_targets_over_known_positives():
    torch.manual_seed(0)
    img, txt = torch.randn(4, 8), torch.randn(4, 8)
    scale = torch.tensor(np.log(10.0))
    eye = torch.eye(4, dtype=torch.bool)
    assert torch.allclose(clip_contrastive_loss(img, txt, scale, eye), clip_contrastive_loss(img, txt, scale))
    pos = eye.clone()
    pos[0, 1] = True  # text 1 ("a star") also describes image 0, not the other way round
    logits = 10.0 * F.normalize(img, dim=-1) @ F.normalize(txt, dim=-1).T  # [4, 4]
    i2t = torch.tensor([[0.5, 0.5, 0, 0], [0, 1.0, 0, 0], [0, 0, 1.0, 0], [0, 0, 0, 1.0]])
    t2i = torch.tensor([[1.0, 0, 0, 0], [0.5, 0.5, 0, 0], [0, 0, 1.0, 0], [0, 0, 0, 1.0]])
    expected = -0.5 * ((i2t * logits.log_softmax(1)).sum(1).mean() + (t2i * logits.T.log_softmax(1)).sum(1).mean())
    torch.testing.assert_close(clip_contrastive_loss(img, txt, scale, pos), expected)
    with pytest.raises(ValueError, match="diagonal"):
        clip_contrastive_loss(img, txt, scale, torch.zeros(4, 4, dtype=torch.bool))


def test_positive_pairs_follow_what_each_phrase_names():
    red_star = {"shape": "star", "color": "red", "style": "solid"}
    blue_star = {"shape": "star", "color": "blue", "style": "dotted"}
    red_ring = {"shape": "ring", "color": "red", "style": "solid"}
    texts = ["a red star", "a photo of a dotted star.", "a red ring", "two stars.", "two stars."]
    pos = positive_pairs(texts, [red_star, blue_star, red_ring, None, None])
    expected = torch.tensor([
        [1, 0, 0, 0, 0],  # the red star: only "a red star" (the blue star's phrase names "dotted")
        [0, 1, 0, 0, 0],  # the blue dotted star
        [0, 0, 1, 0, 0],
        [0, 0, 0, 1, 1],  # scenes: identical captions
        [0, 0, 0, 1, 1],
    ], dtype=torch.bool)
    assert torch.equal(pos, expected)
    pos = positive_pairs(["a star", "a blue star"], [red_star, blue_star])
    assert torch.equal(pos, torch.tensor([[True, False], [True, True]]))  # "a star" fits both stars


def test_zero_shot_metrics_rigged_and_random():
    task = ZeroShotTask.shapeworld()
    assert len(task.shapes) == 16 and len(task.novel) == 4 and len(task.colors) >= 10
    dim = len(task.shapes) + len(task.colors)

    def encode(texts):  # a rigged text tower: one-hot shape + one-hot colour named in the text
        out = torch.zeros(len(texts), dim)
        for i, t in enumerate(texts):
            words = t.rstrip(".").split()
            out[i, task.shapes.index(words[-1])] = 1.0
            if words[-2] in task.colors:
                out[i, len(task.shapes) + task.colors.index(words[-2])] = 4.0
        return out

    shapes = torch.arange(32) % 16
    colors = torch.arange(32) % len(task.colors)
    perfect = torch.cat([F.one_hot(shapes, 16), 4 * F.one_hot(colors, len(task.colors))], 1).float()
    m = zero_shot_metrics(encode, perfect, shapes, colors, task)
    assert m == {"shape_acc": 1.0, "shape_acc_base": 1.0, "shape_acc_novel": 1.0, "color_acc": 1.0}
    noise = zero_shot_metrics(encode, torch.randn(32, dim), shapes, colors, task)
    assert all(0.0 <= v <= 1.0 for v in noise.values())


def test_pair_pool_is_deterministic_and_labelled(tmp_path):
    spec = PoolSpec(num_scenes=6, seed=3, image_size=32, captions_per_scene=2, phrases_per_crop=2)
    pool = render_pool(spec, progress=False)
    again = cached_pool(spec, tmp_path, progress=False)
    assert np.array_equal(pool.images, again.images) and pool.texts == again.texts
    assert len(list(tmp_path.glob("*.pkl"))) == 1
    assert pool.images.shape[1:] == (32, 32, 3) and pool.images.dtype == np.uint8
    crops = pool.crop_indices()
    assert 0 < len(crops) < len(pool)  # scenes and crops
    for i in crops:
        # every phrase of a crop names its object's shape
        assert all(pool.attributes[i]["shape"] in t for t in pool.texts[i])


def test_pair_text_variants_and_collate():
    pool = render_pool(PoolSpec(num_scenes=3, seed=5, image_size=32), progress=False)
    crop = int(pool.crop_indices()[0])
    shape = pool.attributes[crop]["shape"]
    bare = ImageTextPairs(pool, augment=True, period=1.0, bare=1.0, article=1.0)
    pixels, text, attrs = bare[crop]
    assert text.endswith(f"a {shape}.") or text.endswith(f"a {shape} shape.")  # shape only, "a" article, period
    assert pixels.shape == (32, 32, 3) and attrs == pool.attributes[crop]
    plain = ImageTextPairs(pool, augment=False)
    assert plain[crop][1] in pool.texts[crop] and torch.equal(plain[crop][0], torch.from_numpy(pool.images[crop]))
    images, tokens, positives = PairCollate(16)([plain[i] for i in range(len(pool))])
    assert images.shape == (len(pool), 32, 32, 3) and tokens.shape == (len(pool), 16)
    assert positives.shape == (len(pool), len(pool)) and bool(positives.diagonal().all())


def test_pretrain_end_to_end_saves_a_loadable_clip(tmp_path):
    from hydra import compose, initialize_config_dir

    from ovdet.pretraining.run import pretrain

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            config_name="pretrain_clip",
            overrides=[
                "clip=tiny_rn", "trainer.max_steps=4", "trainer.val_check_interval=2", "data.batch_size=8",
                "data.train.num_scenes=8", "data.val.num_scenes=4", "data.cache_dir=null", "data.render_workers=0",
                f"paths.output_dir={tmp_path}", f"out_dir={tmp_path / 'clip'}", "~callbacks.progress", "~logger",
            ],
        )
    model, report = pretrain(cfg)
    assert report["steps"] == 4 and set(report["zero_shot"]) == {"shape_acc", "shape_acc_base", "shape_acc_novel", "color_acc"}
    assert all(0.0 <= v <= 1.0 for v in report["zero_shot"].values())
    loaded = load_clip(tmp_path / "clip")
    x = torch.randn(2, 3, 32, 32)
    texts = ["a red star", "three shapes: a ring, a cross and a heart."]
    model.eval()
    with torch.no_grad():
        assert torch.equal(model.encode_image(x), loaded.model.encode_image(x))
        assert torch.equal(model.encode_text(loaded.tokenizer(texts)), loaded.text_tower(texts))
    det = Detector.from_clip(str(tmp_path / "clip"), image_size=64)
    assert det.backbone.grid_size(64) == (2, 2)


@pytest.mark.parametrize("clip", ["shapeworld_rn", "tiny_rn"])
def test_clip_configs_build(clip):
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="pretrain_clip", overrides=[f"clip={clip}", "experiment=shapeworld_clip"])
    model = instantiate(cfg.clip)
    assert model.open_clip_config["preprocess_cfg"]["size"] == cfg.clip.vision_cfg.image_size
