import pytest
import torch
from transformers import CLIPVisionModel

from ovdet.towers.loader import load_clip


def test_patch_tokens_equal_direct_transformers(tiny_clip_dir):
    loaded = load_clip(str(tiny_clip_dir))
    direct = CLIPVisionModel.from_pretrained(str(tiny_clip_dir)).eval()
    x = torch.randn(2, 3, 48, 48)  # not CLIP's 32 px: position embeddings are interpolated
    with torch.no_grad():
        ours = loaded.backbone.patch_tokens(x)
        ref = direct(pixel_values=x, interpolate_pos_encoding=True).last_hidden_state
        ref = direct.post_layernorm(ref)
    assert torch.allclose(ours, ref, atol=1e-5)


@pytest.mark.parametrize("size", [32, 64])
def test_dense_features_at_two_resolutions(tiny_clip_dir, size):
    backbone = load_clip(str(tiny_clip_dir)).backbone
    feats = backbone(torch.randn(1, 3, size, size))
    assert feats.grid == (size // 8, size // 8)
    assert feats.tokens.shape == (1, (size // 8) ** 2, backbone.width)


def test_freezing_keeps_only_last_blocks_and_merge_norm_trainable(tiny_clip_dir):
    backbone = load_clip(str(tiny_clip_dir), trainable_layers=1).backbone
    trainable = {n for n, p in backbone.named_parameters() if p.requires_grad}
    assert any(n.startswith("vision.encoder.layers.1.") for n in trainable)
    assert not any(n.startswith("vision.encoder.layers.0.") for n in trainable)
    assert not any("embeddings" in n for n in trainable)
    assert {"merge_norm.weight", "merge_norm.bias"} <= trainable
    frozen = load_clip(str(tiny_clip_dir)).backbone
    assert {n for n, p in frozen.named_parameters() if p.requires_grad} == {"merge_norm.weight", "merge_norm.bias"}
    with pytest.raises(ValueError, match="trainable_layers"):
        frozen.set_trainable_layers(5)


def test_non_square_input_is_rejected(tiny_clip_dir):
    backbone = load_clip(str(tiny_clip_dir)).backbone
    with pytest.raises(ValueError, match="square"):
        backbone(torch.randn(1, 3, 32, 40))
