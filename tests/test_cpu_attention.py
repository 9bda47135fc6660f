"""The bf16 CPU attention path: the same answer as SDPA within bf16 rounding; fp32 untouched, bit for bit."""

import pytest
import torch

from ovdet.towers import cpu_attention
from ovdet.towers.cpu_attention import chunked_attention

pytestmark = pytest.mark.usefixtures("seeded")


class _Attention(torch.nn.Module):
    is_causal = False


@pytest.mark.parametrize("batch, tokens, budget", [(2, 50, 10**6), (2, 50, 7_500), (1, 300, 10**6), (1, 300, 20_000)])
def test_chunks_give_sdpa_in_bf16(batch, tokens, budget, monkeypatch):
    """Few (batch x head) rows per chunk (7,500: 3 + 3 + 2 of 8, a short last chunk in the shared score
    buffer), and query-row blocks for long sequences (20,000: blocks of 66 rows, the last one 36)."""
    monkeypatch.setattr(cpu_attention, "SCORE_BUDGET", budget)
    torch.manual_seed(0)
    q, k, v = (torch.randn(batch, 4, tokens, 16) for _ in range(3))
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v).transpose(1, 2)  # [B, T, H, d]
    out, _ = chunked_attention(_Attention().eval(), q.bfloat16(), k.bfloat16(), v.bfloat16(), None, scaling=16**-0.5)
    assert out.shape == ref.shape and out.dtype == torch.bfloat16
    assert (out.float() - ref).abs().max() < 0.03  # bf16 keeps ~3 significant digits


def test_fp32_masks_and_training_keep_the_sdpa_path():
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    module = _Attention().eval()
    q, k, v = (torch.randn(1, 2, 7, 8) for _ in range(3))
    ours, _ = chunked_attention(module, q, k, v, None, scaling=0.3)
    theirs, _ = sdpa_attention_forward(module, q, k, v, None, scaling=0.3)
    assert torch.equal(ours, theirs)


def test_a_vit_tower_uses_it_and_fp32_outputs_are_unchanged(tiny_clip_dir):
    from transformers import CLIPModel

    from ovdet.models.detector import Detector

    det = Detector.from_clip(str(tiny_clip_dir), image_size=64).eval()
    assert det.backbone.vision.config._attn_implementation == cpu_attention.NAME
    plain = CLIPModel.from_pretrained(str(tiny_clip_dir), attn_implementation="sdpa").vision_model.eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ours = det.backbone.vision(pixel_values=x, interpolate_pos_encoding=True).last_hidden_state
        theirs = plain(pixel_values=x, interpolate_pos_encoding=True).last_hidden_state
    assert torch.equal(ours, theirs)


def test_row_chunked_mlp_keeps_weights_and_answers(tiny_clip_dir, monkeypatch):
    """The MLP class swap keeps state_dict keys; bf16 blocks give the unchunked result; fp32 is untouched."""
    from transformers import CLIPModel

    from ovdet.towers import cpu_mlp

    vision = CLIPModel.from_pretrained(str(tiny_clip_dir)).vision_model.eval()
    keys = list(vision.state_dict())
    mlp = vision.encoder.layers[0].mlp
    x = torch.randn(3, 40, mlp.fc1.in_features)
    import copy

    with torch.no_grad():
        plain32, plain16 = mlp(x), copy.deepcopy(mlp).bfloat16()(x.bfloat16())
        cpu_mlp.chunk_mlps(vision)
        monkeypatch.setattr(cpu_mlp, "ROWS", 16)  # 120 rows: 8 blocks
        assert isinstance(mlp, cpu_mlp.RowChunkedMLP) and list(vision.state_dict()) == keys
        assert torch.equal(mlp(x), plain32)
        chunked16 = mlp.bfloat16()(x.bfloat16())
    assert (chunked16.float() - plain16.float()).abs().max() <= 0.02 * plain16.float().abs().max()
