"""ALIGN towers: an AlignModel folder loads with ALIGN's own embeddings (EfficientNet map mean, BERT [CLS] + projection)
and runs every ovdet path; configs with no equivalent are refused by field name."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from tower_family_checks import (
    calibrate_batchnorm,
    check_detect_cli,
    check_detector_round_trip,
    check_distillation,
    check_fast_dev_run_and_export,
    check_precisions,
    perturb,
)

from ovdet.errors import ModelNotAvailableError
from ovdet.towers.loader import load_clip
from ovdet.towers.text_align import AlignTextTower
from ovdet.towers.vision_align import AlignVisionBackbone

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny tensors run best on one thread

NATIVE = 64  # the tiny tower's image_size: a 2 x 2 map
TEXTS = ["a photo of a star.", "two small red circles and a striped blue star.", "Zebra " * 80]  # the last is cut
WORDS = ("a photo of star two small red circle and striped blue green triangle on the left person right umbrella "
         "forklift in warehouse many shape every colour . cat dog fork").split()


def tiny_bert_tokenizer():
    """A BERT WordPiece tokenizer on a vocabulary written here (no download)."""
    from transformers import BertTokenizer

    pieces = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *sorted(set(WORDS)), "##s", "##ed"]
    return BertTokenizer(vocab={p: i for i, p in enumerate(pieces)})


def align_config(vocab_size: int, **changes):
    from transformers import AlignConfig

    vision = dict(image_size=NATIVE, width_coefficient=0.125, depth_coefficient=0.25)  # 7 blocks, 40 channels
    text = dict(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                max_position_embeddings=64)
    vision.update(changes.pop("vision", {}))
    return AlignConfig(text_config=text, vision_config=vision, **{"projection_dim": 40, "temperature_init_value": 0.05,
                                                                  **changes})


def save_tiny_align(folder: Path, seed: int = 0, **changes) -> Path:
    """A random AlignModel, weights and BatchNorm statistics perturbed, saved with its tokenizer and ALIGN's own
    image processor settings (0..255 / 127.5 - 1, no normalisation)."""
    from transformers import AlignModel, EfficientNetImageProcessor

    tokenizer = tiny_bert_tokenizer()
    torch.manual_seed(seed)
    model = AlignModel(align_config(len(tokenizer), **changes)).eval()
    perturb(model, seed)
    calibrate_batchnorm(model.vision_model, torch.randn(8, 3, NATIVE, NATIVE, generator=torch.Generator().manual_seed(9)))
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    EfficientNetImageProcessor(do_normalize=False, rescale_factor=1 / 127.5, rescale_offset=True, include_top=False,
                               size={"height": NATIVE, "width": NATIVE}).save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="module")
def align_dir(tmp_path_factory):
    return save_tiny_align(tmp_path_factory.mktemp("align") / "clip")


@pytest.fixture(scope="module")
def reference(align_dir):
    from transformers import AlignModel, AutoTokenizer

    return AlignModel.from_pretrained(str(align_dir)).eval(), AutoTokenizer.from_pretrained(str(align_dir))


def test_embeddings_equal_align(align_dir, reference):
    model, tokenizer = reference
    loaded = load_clip(align_dir)
    assert loaded.format == "align" and isinstance(loaded.backbone, AlignVisionBackbone)
    assert isinstance(loaded.text_tower, AlignTextTower) and loaded.text_tower.embed_dim == 40
    assert loaded.backbone.width == 40 and loaded.backbone.stride == 32 and loaded.backbone.default_image_size == NATIVE
    enc = tokenizer(TEXTS, padding="max_length", max_length=64, truncation=True, return_tensors="pt")  # AlignProcessor's
    with torch.no_grad():
        text_diff = (loaded.text_tower(TEXTS) - model.get_text_features(**enc).pooler_output).abs().max()
        for size in (NATIVE, 96, 128):  # a CNN takes any multiple of 32: 3 x 3 and 4 x 4 maps
            x = torch.randn(2, 3, size, size)
            ref = model.get_image_features(pixel_values=x)
            tokens, pooled = loaded.backbone.encode(x)  # [2, h*w, 640-like], [2, D]
            assert tokens.shape == (2, (size // 32) ** 2, 40)
            torch.testing.assert_close(pooled, ref.pooler_output, rtol=0, atol=1e-5)
            # the dense tokens are the reference's own last map, cell by cell, and their mean its pooled output
            torch.testing.assert_close(tokens, ref.last_hidden_state.flatten(2).transpose(1, 2), rtol=0, atol=1e-5)
            torch.testing.assert_close(tokens.mean(1), ref.pooler_output, rtol=0, atol=1e-5)
    assert text_diff <= 1e-5, float(text_diff)
    assert loaded.head_init == pytest.approx({"logit_scale": 1 / float(model.temperature.detach()), "logit_shift": 0.0})


def test_pixels_are_what_aligns_processor_gives(align_dir):
    """ALIGN's processor rescales to [-1, 1] and does not normalise; ovdet's mean/std on [0, 1] pixels agree."""
    from transformers import EfficientNetImageProcessor

    backbone = load_clip(align_dir).backbone
    assert backbone.image_mean == pytest.approx((0.5,) * 3) and backbone.image_std == pytest.approx((0.5,) * 3)
    image = (torch.rand(NATIVE, NATIVE, 3, generator=torch.Generator().manual_seed(0)) * 255).byte()
    theirs = EfficientNetImageProcessor.from_pretrained(str(align_dir))(
        image.numpy(), do_resize=False, return_tensors="pt")["pixel_values"]
    mean, std = torch.tensor(backbone.image_mean)[:, None, None], torch.tensor(backbone.image_std)[:, None, None]
    ours = (image.permute(2, 0, 1).float() / 255 - mean) / std
    torch.testing.assert_close(ours[None], theirs, rtol=0, atol=1e-5)


def test_merge_modes_trainable_blocks_and_frozen_batchnorm(align_dir):
    backbone = load_clip(align_dir, trainable_layers=2).backbone
    blocks = backbone.vision.encoder.blocks
    assert all(p.requires_grad for b in blocks[-2:] for p in b.parameters())
    assert not any(p.requires_grad for b in blocks[:-2] for p in b.parameters())
    backbone.train()
    assert not backbone.vision.training and backbone.merge_norm.training  # BatchNorm statistics stay frozen
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        feats = backbone(x)
        tokens, pooled = backbone.encode(x)
        merged = AlignVisionBackbone(backbone.vision, (0.5,) * 3, (0.5,) * 3, merge="pool")(x)
    assert feats.grid == (3, 3) and feats.tokens.shape == (2, 9, 40)
    torch.testing.assert_close(feats.tokens, backbone.merge_norm(tokens))
    torch.testing.assert_close(merged.tokens, torch.nn.functional.layer_norm(tokens * pooled[:, None], (40,)))
    with pytest.raises(ValueError, match="merge must be"):
        AlignVisionBackbone(backbone.vision, (0.5,) * 3, (0.5,) * 3, merge="cls")
    with pytest.raises(ValueError, match="divisible by the stride 32"):
        backbone(torch.randn(1, 3, 80, 80))


def test_detector_saves_reloads_runs_every_precision_and_detects(align_dir, tmp_path, capsys):
    check_detector_round_trip(align_dir, tmp_path, 96, "align")
    check_precisions(align_dir, 96)
    saved = json.loads((tmp_path / "det" / "clip" / "preprocessor_config.json").read_text())
    assert saved["image_processor_type"].startswith("EfficientNetImageProcessor")
    check_detect_cli(align_dir, tmp_path, capsys)


def test_fast_dev_run_and_onnx_export(align_dir, tmp_path):
    check_fast_dev_run_and_export(align_dir, tmp_path, "align")


def test_dense_distillation(align_dir, tmp_path):
    from ovdet.distill.region_embedding import crop_embeddings, dense_region_embeddings
    from ovdet.distill.region_tower import region_tower
    from ovdet.distill.mean_pool_region_tower import MeanPoolRegionTower

    clip = load_clip(align_dir)
    tower = region_tower(clip)
    assert isinstance(tower, MeanPoolRegionTower) and tower.roi_size == 2 and tower.crop_size == NATIVE
    x = torch.randn(2, 3, NATIVE, NATIVE)
    whole = [torch.tensor([[0.0, 0.0, NATIVE, NATIVE]])] * 2
    with torch.no_grad():  # at ALIGN's resolution a whole-input box is ALIGN's image embedding itself
        image = torch.nn.functional.normalize(clip.model.get_image_features(pixel_values=x).pooler_output, dim=-1)
        torch.testing.assert_close(dense_region_embeddings(tower, x, whole), image, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(crop_embeddings(tower, x, whole), image, rtol=1e-5, atol=1e-5)
    check_distillation(align_dir, tmp_path, 96, trainable_layers=2)


def test_configs_with_no_equivalent_are_refused_by_name(tmp_path):
    with pytest.raises(ModelNotAvailableError, match="pooling_type='max'"):
        load_clip(save_tiny_align(tmp_path / "max", vision=dict(pooling_type="max")))
    folder = save_tiny_align(tmp_path / "proj", projection_dim=24)
    with pytest.raises(ModelNotAvailableError, match="projection_dim=24 but its image embedding has 40 channels"):
        load_clip(folder)


def test_a_foreign_tokenizer_is_refused(align_dir, tmp_path):
    from transformers import BertTokenizer

    folder = Path(shutil.copytree(align_dir, tmp_path / "clip"))
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (folder / name).unlink()
    BertTokenizer(vocab={f"w{i}": i for i in range(500)}, unk_token="w1", pad_token="w0", cls_token="w2",
                  sep_token="w3", mask_token="w4").save_pretrained(str(folder))
    with pytest.raises(ModelNotAvailableError, match="has 500 tokens but its text tower only 37"):
        load_clip(folder)
