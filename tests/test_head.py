import pytest
import torch

from ovdet.models.head import MASKED_LOGIT, DetectionHead


def test_head_shapes_and_vocabulary_is_an_input():
    head = DetectionHead(token_dim=16, embed_dim=8)
    tokens = torch.randn(2, 12, 16)
    for q in (1, 7, 40):  # any vocabulary size, same weights
        out = head(tokens, (3, 4), torch.nn.functional.normalize(torch.randn(q, 8), dim=-1))
        assert out["logits"].shape == (2, 12, q)
        assert out["pred_boxes"].shape == (2, 12, 4)
        assert out["objectness"].shape == (2, 12)
        assert out["region_embeds"].shape == (2, 12, 8)
    assert torch.allclose(out["region_embeds"].norm(dim=-1), torch.ones(2, 12), atol=1e-5)


def test_per_image_queries_with_padding_mask():
    torch.manual_seed(0)
    head = DetectionHead(token_dim=16, embed_dim=8)
    tokens = torch.randn(2, 6, 16)
    queries = torch.randn(2, 3, 8)
    mask = torch.tensor([[True, True, False], [True, True, True]])
    out = head(tokens, (2, 3), queries, mask)
    assert (out["logits"][0, :, 2] == MASKED_LOGIT).all()
    # A shared [Q, E] vocabulary gives the same logits as the same vocabulary per image.
    shared = head(tokens, (2, 3), queries[1])["logits"]
    per_image = head(tokens, (2, 3), queries[1].expand(2, -1, -1))["logits"]
    assert torch.allclose(shared, per_image, atol=1e-6)


def test_joint_space_tokens_start_zero_shot():
    """Tokens already in the text space: the untrained head ranks queries by cosine similarity."""
    torch.manual_seed(0)
    head = DetectionHead(token_dim=8, embed_dim=8)
    tokens = torch.randn(1, 5, 8)
    queries = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)
    logits = head(tokens, (1, 5), queries)["logits"][0]  # [5, 4]
    cosine = torch.nn.functional.normalize(tokens[0], dim=-1) @ queries.T
    assert torch.equal(logits.argmax(-1), cosine.argmax(-1))
    # Scale 10 and shift -0.46 at init: a region of cosine 0 starts at the focal prior p ~ 0.01.
    assert torch.allclose(logits, 10.0 * (cosine - 0.46), atol=1e-4)


def test_fresh_context_tower_is_the_identity_and_then_sees_neighbours():
    """context_blocks starts as the per-region head (zero last convs); once trained, a region's box
    depends on its neighbours, which the per-region MLP never sees."""
    torch.manual_seed(0)
    plain = DetectionHead(token_dim=16, embed_dim=8)
    tower = DetectionHead(token_dim=16, embed_dim=8, context_blocks=2)
    tower.load_state_dict(plain.state_dict(), strict=False)
    for p in (*plain.box_mlp.parameters(), *tower.box_mlp.parameters()):
        torch.nn.init.normal_(p, std=0.1)
    tower.box_mlp.load_state_dict(plain.box_mlp.state_dict())
    tokens, queries = torch.randn(2, 12, 16), torch.randn(3, 8)
    a, b = plain(tokens, (3, 4), queries), tower(tokens, (3, 4), queries)
    for key in ("pred_boxes", "objectness", "logits"):
        assert torch.allclose(a[key], b[key], atol=1e-6), key
    for block in tower.context.blocks:
        torch.nn.init.normal_(block[-1].weight, std=0.1)
    moved = tokens.clone()
    moved[:, 1] += 1.0  # region 1 is a neighbour of region 0 on the 3 x 4 grid
    before, after = tower(tokens, (3, 4), queries), tower(moved, (3, 4), queries)
    assert not torch.allclose(before["pred_boxes"][:, 0], after["pred_boxes"][:, 0])
    assert torch.equal(plain(moved, (3, 4), queries)["pred_boxes"][:, 0], a["pred_boxes"][:, 0])
    with pytest.raises(ValueError, match="context_blocks"):
        DetectionHead(token_dim=16, embed_dim=8, context_blocks=-1)
