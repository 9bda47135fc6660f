"""MetaCLIP 2 towers: a MetaClip2Model folder loads with its own embeddings (CLIP ViT class token, text pooled at the
first EOS, its own XLM-R tokenizer) and runs every ovdet path; a tokenizer that is not its own is refused."""

import shutil
from pathlib import Path

import pytest
import torch
from tower_family_checks import (
    check_detect_cli,
    check_detector_round_trip,
    check_distillation,
    check_fast_dev_run_and_export,
    check_precisions,
    perturb,
)

from ovdet.errors import ModelNotAvailableError
from ovdet.towers.loader import load_clip
from ovdet.towers.text_hf import HFCLIPTextTower
from ovdet.towers.vision_vit import CLIPVisionBackbone

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny tensors run best on one thread

NATIVE = 32  # 4 x 4 patches of 8 px
TEXTS = ["a photo of a star.", "two small red circles and a striped blue star.", "Zebra " * 80]  # the last is cut
WORDS = ("a photo of star two small red circle and striped blue green triangle on the left person right umbrella "
         "forklift in warehouse many shape every colour . cat dog fork").split()


def tiny_xlmr_tokenizer():
    """An XLM-R (Unigram) tokenizer, MetaCLIP 2's kind, on pieces written here (no download): <s>=0, <pad>=1, </s>=2."""
    from transformers import XLMRobertaTokenizer

    chars = sorted(set("".join(WORDS) + "zZ"))
    pieces = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), *[("\u2581" + w, -1.0) for w in sorted(set(WORDS))],
              ("\u2581", -2.0), *[(c, -3.0) for c in chars], ("<mask>", 0.0)]
    return XLMRobertaTokenizer(vocab=pieces)


def save_tiny_metaclip2(folder: Path, seed: int = 0, eos_token_id: int = 2) -> Path:
    """A random MetaClip2Model, every weight moved by 0.05 * randn, saved with its tokenizer and image processor."""
    from transformers import CLIPImageProcessor, MetaClip2Config, MetaClip2Model

    tokenizer = tiny_xlmr_tokenizer()
    config = MetaClip2Config(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=77, bos_token_id=0, pad_token_id=1,
                         eos_token_id=eos_token_id),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=NATIVE, patch_size=8),
        projection_dim=24,
    )
    torch.manual_seed(seed)
    model = MetaClip2Model(config).eval()
    perturb(model, seed)
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    CLIPImageProcessor(size={"shortest_edge": NATIVE}, crop_size={"height": NATIVE, "width": NATIVE}).save_pretrained(
        str(folder))
    return folder


@pytest.fixture(scope="module")
def metaclip2_dir(tmp_path_factory):
    return save_tiny_metaclip2(tmp_path_factory.mktemp("metaclip2") / "clip")


@pytest.fixture(scope="module")
def reference(metaclip2_dir):
    from transformers import AutoTokenizer, MetaClip2Model

    return MetaClip2Model.from_pretrained(str(metaclip2_dir)).eval(), AutoTokenizer.from_pretrained(str(metaclip2_dir))


def test_embeddings_equal_metaclip2(metaclip2_dir, reference):
    model, tokenizer = reference
    loaded = load_clip(metaclip2_dir)
    assert loaded.format == "metaclip_2" and isinstance(loaded.backbone, CLIPVisionBackbone)
    assert isinstance(loaded.text_tower, HFCLIPTextTower) and loaded.text_tower.embed_dim == 24
    assert loaded.backbone.default_image_size == NATIVE and loaded.backbone.stride == 8
    enc = tokenizer(TEXTS, padding="max_length", max_length=77, truncation=True, return_tensors="pt")
    assert (enc["input_ids"] == 2).sum(1).tolist() == [1, 1, 1] and enc["input_ids"][0, -1] == 1  # one EOS, then <pad>
    with torch.no_grad():
        text_diff = (loaded.text_tower(TEXTS) - model.get_text_features(**enc).pooler_output).abs().max()
        for size in (NATIVE, 48):  # 48: position embeddings interpolated, in both (interpolate_pos_encoding)
            x = torch.randn(2, 3, size, size)
            ref = model.get_image_features(pixel_values=x, interpolate_pos_encoding=True)
            tokens = loaded.backbone.patch_tokens(x)  # [2, 1 + h*w, D], the class token ovdet merges first
            assert tokens.shape == (2, 1 + (size // 8) ** 2, 32)
            torch.testing.assert_close(tokens[:, 0], model.vision_model(pixel_values=x, interpolate_pos_encoding=True)
                                       .pooler_output, rtol=0, atol=1e-5)
            torch.testing.assert_close(model.visual_projection(tokens[:, 0]), ref.pooler_output, rtol=0, atol=1e-5)
            feats = loaded.backbone(x)
            assert feats.grid == (size // 8, size // 8)
            torch.testing.assert_close(feats.tokens, loaded.backbone.merge_norm(tokens[:, 1:] * tokens[:, :1]))
    assert text_diff <= 1e-5, float(text_diff)


def test_text_is_pooled_at_the_first_eos(metaclip2_dir):
    """XLM-R's EOS (2) is a small id: CLIP's legacy pooling (the largest id) would pick a word; ovdet's tower pools at
    the first EOS, as MetaCLIP 2 does."""
    tower = load_clip(metaclip2_dir).text_tower
    enc = tower.tokenizer(TEXTS[:2], padding=True, return_tensors="pt")
    with torch.no_grad():
        ours = tower(TEXTS[:2])
        hidden = tower.text_model(**enc).last_hidden_state  # [2, T, H]
        rows = torch.arange(2)
        at_eos = tower.text_projection(hidden[rows, (enc["input_ids"] == 2).int().argmax(1)])
        at_max_id = tower.text_projection(hidden[rows, enc["input_ids"].argmax(1)])
    torch.testing.assert_close(ours, at_eos, rtol=0, atol=1e-6)
    assert not torch.allclose(ours, at_max_id, atol=1e-3)


def test_detector_saves_reloads_runs_every_precision_and_detects(metaclip2_dir, tmp_path, capsys):
    check_detector_round_trip(metaclip2_dir, tmp_path, 48, "metaclip_2")
    check_precisions(metaclip2_dir, 48)
    assert {"tokenizer.json", "preprocessor_config.json"} <= {p.name for p in (tmp_path / "det" / "clip").iterdir()}
    check_detect_cli(metaclip2_dir, tmp_path, capsys)


def test_fast_dev_run_and_onnx_export(metaclip2_dir, tmp_path):
    check_fast_dev_run_and_export(metaclip2_dir, tmp_path, "metaclip_2")


def test_dense_distillation(metaclip2_dir, tmp_path):
    from ovdet.distill.region_tower import ViTRegionTower, region_tower

    assert isinstance(region_tower(load_clip(metaclip2_dir)), ViTRegionTower)
    check_distillation(metaclip2_dir, tmp_path, 64, trainable_layers=2)


def test_a_tokenizer_that_is_not_its_own_is_refused(metaclip2_dir, tmp_path):
    folder = save_tiny_metaclip2(tmp_path / "eos", eos_token_id=3)  # the tower pools at id 3, the tokenizer ends at 2
    with pytest.raises(ModelNotAvailableError, match="ends texts with token 2 but the text tower pools at eos_token_id=3"):
        load_clip(folder)
    from transformers import XLMRobertaTokenizer

    folder = Path(shutil.copytree(metaclip2_dir, tmp_path / "big"))
    XLMRobertaTokenizer(vocab=[("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0),
                               *[(f"w{i}", -1.0) for i in range(200)]]).save_pretrained(str(folder))
    with pytest.raises(ModelNotAvailableError, match="has 20[45] tokens but its text tower only 61"):
        load_clip(folder)
