import pytest
import torch

from ovdet.towers.loader import load_clip
from ovdet.models.text_encoder import TextEncoder
from ovdet.text.templates import resolve_templates, template_sets


@pytest.fixture()
def encoder(tiny_clip_dir):
    return TextEncoder(load_clip(str(tiny_clip_dir)).text_tower)


def test_embeddings_are_normalised_and_cached(encoder):
    first = encoder.encode(["red circle", "star"], "clip7")
    assert first.shape == (2, encoder.embed_dim)
    assert torch.allclose(first.norm(dim=-1), torch.ones(2), atol=1e-5)
    calls = encoder.tower_calls
    again = encoder.encode(["star", "red circle"], "clip7")
    assert encoder.tower_calls == calls  # served from the cache, the tower did not run
    assert torch.allclose(again, first.flip(0), atol=1e-6)
    encoder.encode(["star", "blue square"], "clip7")
    assert encoder.tower_calls == calls + 1  # only the new text is encoded


def test_cached_equals_fresh_tower_output(encoder):
    cached = encoder.encode(["forklift"], "single")
    with torch.no_grad():
        fresh = torch.nn.functional.normalize(encoder.tower(["forklift"]), dim=-1)
    assert torch.allclose(cached, fresh, atol=1e-6)


def test_template_ensemble_and_per_template(encoder):
    per = encoder.encode(["dog", "cat"], "clip7", reduce=False)
    assert per.shape == (7, 2, encoder.embed_dim)
    mean = torch.nn.functional.normalize(per.mean(0), dim=-1)
    assert torch.allclose(encoder.encode(["dog", "cat"], "clip7"), mean, atol=1e-6)


def test_text_tower_is_frozen(encoder):
    assert not any(p.requires_grad for p in encoder.parameters())
    encoder.train()
    assert not encoder.tower.training


def test_template_sets_as_data():
    sets = template_sets()
    assert len(sets["single"]) == 1 and len(sets["clip7"]) == 7 and len(sets["clip80"]) == 80
    assert all("{}" in t for t in sets["clip80"])
    with pytest.raises(ValueError, match="unknown template set"):
        resolve_templates("clip81")
    with pytest.raises(ValueError, match="contain"):
        resolve_templates(["a photo of a"])


@pytest.mark.parametrize("bad", [[], [""], ["  "], [3]])
def test_bad_queries(encoder, bad):
    with pytest.raises(ValueError):
        encoder.encode(bad)


def test_the_embedding_cache_is_bounded(tiny_clip_dir, monkeypatch):
    """A server fed new queries forever keeps at most MAX_CACHED_PROMPTS embeddings, and answers stay right."""
    from ovdet.models import text_encoder

    monkeypatch.setattr(text_encoder, "MAX_CACHED_PROMPTS", 5)
    encoder = load_clip(str(tiny_clip_dir)).text_tower
    enc = text_encoder.TextEncoder(encoder)
    first = enc.encode(["a", "b"]).clone()
    for i in range(10):
        enc.encode([f"q{i}", f"r{i}"])
        assert len(enc._cache) <= 5
    enc._stacked.clear()
    assert torch.allclose(enc.encode(["a", "b"]), first)


def test_each_cached_embedding_owns_its_memory(encoder):
    """An evicted entry must free its memory: a view into the tower's whole batch (up to 256 rows) would keep
    the batch alive while any one of its rows stays cached, so the cache bound would bound nothing."""
    encoder.encode([f"thing {i}" for i in range(20)], "photo")
    for emb in encoder._cache.values():
        assert emb.untyped_storage().nbytes() == emb.numel() * emb.element_size()
