"""SigLIP2 NaFlex towers: a Siglip2Model folder loads with its own embeddings (patch rows, spatial shapes, position grid
resized per image, MAP head; Gemma-style lowercasing tokenizer) on ovdet's square grid, and runs every ovdet path."""

import json
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
from ovdet.towers.text_siglip import SiglipTextTower
from ovdet.towers.vision_siglip2_naflex import Siglip2NaflexBackbone

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny tensors run best on one thread

NATIVE = 32  # a 4 x 4 learned position grid (num_patches 16) of 8 px patches
TEXTS = ["a photo of a star.", "two small red circles and a striped blue star.", "zebra " * 80]  # the last is cut
SENTENCES = ["a photo of a star.", "two small red circles and a striped blue star.", "a green triangle on the left",
             "the person on the right", "a red umbrella", "forklift in a warehouse", "many shapes of every colour"]


def tiny_siglip2_tokenizer():
    """SigLIP2's tokenizer class (Gemma BPE + lowercasing) on a BPE vocabulary trained here, offline."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import Siglip2Tokenizer

    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.Metaspace()
    bpe.train_from_iterator(SENTENCES * 3, trainers.BpeTrainer(
        vocab_size=120, special_tokens=["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"], show_progress=False))
    model = json.loads(bpe.to_str())["model"]
    return Siglip2Tokenizer(vocab=model["vocab"], merges=[tuple(m) for m in model["merges"]])


def save_tiny_siglip2(folder: Path, seed: int = 0, num_patches: int = 16) -> Path:
    """A random Siglip2Model, every weight moved by 0.05 * randn, saved with its tokenizer and image processor."""
    from transformers import Siglip2Config, Siglip2ImageProcessor, Siglip2Model

    tokenizer = tiny_siglip2_tokenizer()
    config = Siglip2Config(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=64, pad_token_id=0, eos_token_id=1,
                         bos_token_id=2),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           patch_size=8, num_patches=num_patches),
    )
    torch.manual_seed(seed)
    model = Siglip2Model(config).eval()
    perturb(model, seed)
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    Siglip2ImageProcessor(patch_size=8, max_num_patches=num_patches).save_pretrained(str(folder))  # mean/std 0.5
    return folder


@pytest.fixture(scope="module")
def siglip2_dir(tmp_path_factory):
    return save_tiny_siglip2(tmp_path_factory.mktemp("siglip2") / "clip")


@pytest.fixture(scope="module")
def reference(siglip2_dir):
    from transformers import AutoTokenizer, Siglip2Model

    return Siglip2Model.from_pretrained(str(siglip2_dir)).eval(), AutoTokenizer.from_pretrained(str(siglip2_dir))


def naflex_inputs(x: torch.Tensor, max_patches: int):
    """What Siglip2ImageProcessor hands the model for images already at their size: the library's own patch rows,
    padded to `max_patches` with a pixel attention mask, and each image's (rows, cols)."""
    from transformers.models.siglip2.image_processing_siglip2 import convert_image_to_patches

    rows = [convert_image_to_patches(image, 8) for image in x]  # [h*w, p*p*C] each
    patches = torch.zeros(len(rows), max_patches, rows[0].shape[1])
    mask = torch.zeros(len(rows), max_patches, dtype=torch.long)
    for i, r in enumerate(rows):
        patches[i, : len(r)], mask[i, : len(r)] = r, 1
    shapes = torch.tensor([[x.shape[-2] // 8, x.shape[-1] // 8]] * len(rows))
    return dict(pixel_values=patches, pixel_attention_mask=mask, spatial_shapes=shapes)


def test_embeddings_equal_siglip2(siglip2_dir, reference):
    model, tokenizer = reference
    loaded = load_clip(siglip2_dir)
    assert loaded.format == "siglip2" and isinstance(loaded.backbone, Siglip2NaflexBackbone)
    assert isinstance(loaded.text_tower, SiglipTextTower) and loaded.text_tower.embed_dim == 32
    assert loaded.backbone.default_image_size == NATIVE and loaded.backbone.stride == 8
    # SigLIP2 was trained on texts padded to 64 with no attention mask (the processor's mask is not passed)
    enc = tokenizer(TEXTS, padding="max_length", max_length=64, truncation=True, return_tensors="pt")
    with torch.no_grad():
        text_diff = (loaded.text_tower(TEXTS) - model.get_text_features(input_ids=enc["input_ids"]).pooler_output).abs().max()
        for size, max_patches in ((NATIVE, 16), (48, 36), (24, 16), (48, 40)):  # 6 x 6 and 3 x 3: the grid resized;
            x = torch.randn(2, 3, size, size)  # 40: the reference's rows padded past the image, masked out
            ref = model.get_image_features(**naflex_inputs(x, max_patches))
            tokens, pooled = loaded.backbone.encode(x)  # [2, h*w, D] on ovdet's grid, [2, D]
            n = (size // 8) ** 2
            assert tokens.shape == (2, n, 32)
            torch.testing.assert_close(pooled, ref.pooler_output, rtol=0, atol=1e-5)
            torch.testing.assert_close(tokens, ref.last_hidden_state[:, :n], rtol=0, atol=1e-5)
            torch.testing.assert_close(loaded.backbone.vision.head(tokens), ref.pooler_output, rtol=0, atol=1e-5)
    assert text_diff <= 1e-5, float(text_diff)
    scale = float(model.logit_scale.detach().exp())
    assert loaded.head_init == pytest.approx({"logit_scale": scale, "logit_shift": float(model.logit_bias.detach()) / scale})


def test_text_is_lowercased_as_siglip2_was_trained(siglip2_dir):
    tower = load_clip(siglip2_dir).text_tower
    with torch.no_grad():
        torch.testing.assert_close(tower(["A PHOTO of a Star."]), tower(["a photo of a star."]))


def test_dense_tokens_are_on_ovdets_grid(siglip2_dir):
    """Token k of the dense features is the patch at row k // w, column k % w of the square input."""
    backbone = load_clip(siglip2_dir).backbone
    x = torch.zeros(1, 3, 48, 48)
    x[..., 8:16, 40:48] = 3.0  # one bright patch: row 1, column 5 of the 6 x 6 grid
    from ovdet.towers.vision_siglip2_naflex import patchify

    rows = patchify(x, 8)  # [1, 36, 192]
    assert rows.abs().sum(-1).nonzero()[:, 1].tolist() == [1 * 6 + 5]
    with torch.no_grad():
        feats = backbone(torch.randn(2, 3, 48, 48))
    assert feats.grid == (6, 6) and feats.tokens.shape == (2, 36, 32)


def test_detector_saves_reloads_runs_every_precision_and_detects(siglip2_dir, tmp_path, capsys):
    check_detector_round_trip(siglip2_dir, tmp_path, 48, "siglip2")
    check_precisions(siglip2_dir, 48)
    saved = json.loads((tmp_path / "det" / "clip" / "preprocessor_config.json").read_text())
    assert saved["patch_size"] == 8 and saved["max_num_patches"] == 16
    check_detect_cli(siglip2_dir, tmp_path, capsys)


def test_fast_dev_run_and_onnx_export(siglip2_dir, tmp_path):
    check_fast_dev_run_and_export(siglip2_dir, tmp_path, "siglip2")


def test_dense_distillation(siglip2_dir, tmp_path):
    from ovdet.distill.region_embedding import dense_region_embeddings
    from ovdet.distill.region_tower import SiglipRegionTower, region_tower

    clip = load_clip(siglip2_dir)
    tower = region_tower(clip)
    assert isinstance(tower, SiglipRegionTower) and tower.roi_size == 4 and tower.crop_size == NATIVE
    x = torch.randn(2, 3, NATIVE, NATIVE)
    with torch.no_grad():  # at the native size a whole-input box is SigLIP2's own image embedding
        image = torch.nn.functional.normalize(clip.backbone.encode(x)[1], dim=-1)
        whole = dense_region_embeddings(tower, x, [torch.tensor([[0.0, 0.0, NATIVE, NATIVE]])] * 2)
    torch.testing.assert_close(whole, image, rtol=1e-5, atol=1e-5)
    check_distillation(siglip2_dir, tmp_path, 64, trainable_layers=2)


def test_a_position_grid_that_is_not_square_is_refused(tmp_path):
    with pytest.raises(ModelNotAvailableError, match="num_patches=12, not a square grid"):
        load_clip(save_tiny_siglip2(tmp_path / "clip", num_patches=12))
