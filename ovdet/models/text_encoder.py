"""The frozen text side: prompt-template expansion and an embedding cache keyed by model and text."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ovdet.models.text_tower import TextTower
from ovdet.text.templates import resolve_templates


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
        self._cache: dict[tuple[str, str, str], torch.Tensor] = {}
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

    @torch.no_grad()
    def _fill_cache(self, prompts: list[tuple[str, str]]) -> None:
        """Run the tower on (template, text) pairs not yet cached."""
        key = self.tower.identity
        missing = sorted({p for p in prompts if (key, *p) not in self._cache})
        for start in range(0, len(missing), self.batch_size):
            chunk = missing[start : start + self.batch_size]
            embeds = self.tower([t.format(q) for t, q in chunk])  # [n, E]
            self.tower_calls += 1
            embeds = F.normalize(embeds.float(), dim=-1).cpu()
            for pair, emb in zip(chunk, embeds):
                self._cache[(key, *pair)] = emb

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
        self._fill_cache([(t, q) for t in temps for q in queries])
        key = self.tower.identity
        per_template = torch.stack(
            [torch.stack([self._cache[(key, t, q)] for q in queries]) for t in temps]
        )  # [T, Q, E]
        device = next(self.tower.parameters()).device
        if not reduce:
            return per_template.to(device)
        return F.normalize(per_template.mean(0), dim=-1).to(device)  # [Q, E]


def validate_queries(queries) -> list[str]:
    """Check a query list at the boundary: non-empty, strings, none blank."""
    if isinstance(queries, str):
        queries = [queries]
    queries = list(queries)
    if not queries:
        raise ValueError("the query list is empty; give at least one text query, e.g. -q 'red umbrella'")
    bad = [q for q in queries if not isinstance(q, str) or not q.strip()]
    if bad:
        raise ValueError(f"queries must be non-empty strings, got {bad!r}")
    return [q.strip() for q in queries]
