"""The frozen text side: prompt-template expansion and an embedding cache keyed by model and text."""

from __future__ import annotations

import hashlib
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from ovdet.towers.text_tower import TextTower
from ovdet.text.queries import MAX_QUERY_CHARS, validate_queries  # noqa: F401  (re-exported)
from ovdet.text.templates import resolve_templates
from ovdet.text.tokenizer import warn_truncated
from ovdet.text.vocab_cache import VocabCache, read_vocab_cache, write_vocab_cache

MAX_CACHED_PROMPTS = 250_000  # (template, text) embeddings kept; a server fed new queries forever stays bounded
STACKED_VOCABULARIES = 8  # stacked vocabularies kept by TextEncoder.encode (least recently used dropped)
FINGERPRINT_SAMPLES = 4096  # values hashed per weight tensor


class TextEncoder(nn.Module):
    """Encode free-text queries with a frozen CLIP text tower, caching every embedding.

    Each query is expanded by the prompt templates; embeddings are cached per
    (model identity, template, text), so a vocabulary of thousands of names (LVIS: 1203) is
    encoded once and reused on every image. `tower_calls` counts how often the tower ran.

    Args:
        tower: the CLIP text tower; it is frozen here and kept in eval mode.
        batch_size: texts per tower call when filling the cache.
    """

    def __init__(self, tower: TextTower, batch_size: int = 256):
        super().__init__()
        self.tower = tower.eval().requires_grad_(False)
        self.batch_size = batch_size
        self._cache: OrderedDict[tuple[str, str, str], torch.Tensor] = OrderedDict()
        # Whole stacked vocabularies, so a fixed vocabulary costs a dict lookup per image, not Q stacks.
        self._stacked: OrderedDict[tuple, torch.Tensor] = OrderedDict()
        self._fingerprint: str | None = None
        self.tower_calls = 0

    @property
    def embed_dim(self) -> int:
        return self.tower.embed_dim

    def train(self, mode: bool = True):
        # The text tower is frozen for good: keep it in eval mode whatever the parent does.
        super().train(mode)
        self.tower.eval()
        return self

    def clear_cache(self) -> None:
        self._cache.clear()
        self._stacked.clear()

    def fingerprint(self) -> str:
        """A hash of the text tower's weights (sampled) and tokenizer: names the embedding space on disk."""
        if self._fingerprint is None:
            self._fingerprint = tower_fingerprint(self.tower)
        return self._fingerprint

    def save_vocab(self, path, names: list[str], templates="single", model: str = "") -> VocabCache:
        """Encode `names` with every template and write them to `path` (see `ovdet.text.vocab_cache`)."""
        names = validate_queries(names)
        temps = resolve_templates(templates)
        embeds = self.encode(names, temps, reduce=False).float().cpu()  # [T, Q, E]
        cache = VocabCache(list(names), list(temps), embeds, self.fingerprint(), model or self.tower.identity)
        write_vocab_cache(path, cache)
        return cache

    def load_vocab(self, path) -> VocabCache:
        """Fill the cache from a file of `save_vocab`; refuse one made by a different text tower."""
        cache = read_vocab_cache(path)
        if cache.embeds.shape[-1] != self.embed_dim:
            raise ValueError(
                f"vocabulary cache '{path}' holds {cache.embeds.shape[-1]}-d embeddings but this text tower "
                f"('{self.tower.identity}') makes {self.embed_dim}-d ones; re-run "
                f"`ovdet embed-vocab --model {self.tower.identity} --out {path}`"
            )
        if cache.fingerprint != self.fingerprint():
            raise ValueError(
                f"vocabulary cache '{path}' was made with model '{cache.model}' (text fingerprint "
                f"{cache.fingerprint[:12]}), not this one ('{self.tower.identity}', {self.fingerprint()[:12]}); "
                f"re-run `ovdet embed-vocab --model {self.tower.identity} --out {path}`"
            )
        key = self.tower.identity
        for t, template in enumerate(cache.templates):
            for q, name in enumerate(cache.names):
                self._cache[(key, template, name)] = cache.embeds[t, q].clone()  # evictable one by one
        return cache

    @torch.no_grad()
    def _fill_cache(self, prompts: list[tuple[str, str]]) -> None:
        """Run the tower on (template, text) pairs not yet cached."""
        key = self.tower.identity
        missing = sorted({p for p in prompts if (key, *p) not in self._cache})
        self._make_room({(key, *p) for p in prompts} - {(key, *p) for p in missing}, len(missing))
        warn_truncated([t.format(q) for t, q in missing], getattr(self.tower, "context_length", 77))  # once per text
        for start in range(0, len(missing), self.batch_size):
            chunk = missing[start : start + self.batch_size]
            embeds = self.tower([t.format(q) for t, q in chunk])  # [n, E]
            self.tower_calls += 1
            embeds = F.normalize(embeds.float(), dim=-1).cpu()
            for pair, emb in zip(chunk, embeds):
                self._cache[(key, *pair)] = emb.clone()  # its own storage: a view would keep the whole batch alive

    def _make_room(self, hits: set, incoming: int) -> None:
        """Drop the least recently used embeddings beyond MAX_CACHED_PROMPTS, never those about to be read."""
        for k in hits:
            self._cache.move_to_end(k)
        while len(self._cache) + incoming > MAX_CACHED_PROMPTS and len(self._cache) > len(hits):
            self._cache.popitem(last=False)

    def encode(
        self,
        queries: list[str],
        templates: str | list[str] | tuple[str, ...] = "single",
        reduce: bool = True,
    ) -> torch.Tensor:
        """Embed queries, L2-normalised.

        Args:
            queries: Q free-text queries.
            templates: a template set name ("single", "clip7", "clip80", ...) or a list.
            reduce: average the per-template embeddings (CLIP's ensembling) and renormalise;
                False keeps one embedding per template, for averaging logits instead (OWL-ViT).
        Returns:
            [Q, E] if reduce else [T, Q, E], on the tower's device.
        """
        queries = validate_queries(queries)
        temps = resolve_templates(templates)
        key = self.tower.identity
        device = next(self.tower.parameters()).device
        memo_key = (key, temps, tuple(queries), reduce, str(device))
        if memo_key in self._stacked:
            self._stacked.move_to_end(memo_key)
            return self._stacked[memo_key]  # shared: callers must not modify it in place
        self._fill_cache([(t, q) for t in temps for q in queries])
        per_template = torch.stack(
            [torch.stack([self._cache[(key, t, q)] for q in queries]) for t in temps]
        )  # [T, Q, E]
        out = per_template.to(device) if not reduce else F.normalize(per_template.mean(0), dim=-1).to(device)  # [Q, E]
        self._stacked[memo_key] = out
        if len(self._stacked) > STACKED_VOCABULARIES:
            self._stacked.popitem(last=False)
        return out


def tower_fingerprint(tower: nn.Module) -> str:
    """sha256 over each weight's name, shape and an evenly strided sample of its values, plus the tokenizer.

    Sampling keeps this fast for a 63M-parameter tower while any retrained or different model
    still changes it.
    """
    digest = hashlib.sha256(type(tower).__name__.encode())
    digest.update(f"{type(getattr(tower, 'tokenizer', None)).__name__}:{getattr(tower, 'context_length', '')}".encode())
    for name, tensor in tower.state_dict().items():
        flat = tensor.detach().reshape(-1)
        step = max(1, flat.numel() // FINGERPRINT_SAMPLES)
        sample = flat[::step][:FINGERPRINT_SAMPLES].float().cpu().contiguous()
        digest.update(f"{name}:{tuple(tensor.shape)}".encode())
        digest.update(sample.numpy().tobytes())
    return digest.hexdigest()




