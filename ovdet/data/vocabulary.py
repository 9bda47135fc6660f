"""Per-image query vocabularies: the image's own categories plus random negatives (OWL-ViT)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ovdet.text.templates import resolve_templates


@dataclass(frozen=True)
class Queries:
    """One image's vocabulary: `texts` go to the text tower, `labels[k]` is box k's query index."""

    texts: list[str]  # [Q] prompts as the text tower sees them
    names: list[str]  # [Q] the category name behind each prompt
    labels: np.ndarray  # [N] int64, index into texts


class QuerySampler:
    """Turn the category names of an image's boxes into its query list and box labels.

    Training (OWL-ViT): every category present in the image, topped up with random negative
    categories to `max_queries`, in random order, each wrapped in a random prompt template,
    so that the head learns "none of these" and does not overfit one phrasing. A category
    with boxes is always kept, even past `max_queries`, since its boxes need a label.
    Evaluation: `max_queries=None` gives the whole vocabulary in order, every image alike.

    Args:
        names: the vocabulary (base categories in training; base + novel in evaluation).
        max_queries: queries per image, positives included; None: all of `names`.
        templates: template set name or list; one is drawn per query ("single" keeps names bare).
    """

    def __init__(self, names: Sequence[str], max_queries: int | None = 50, templates: str | Sequence[str] = "single"):
        names = [str(n) for n in names]
        if not names:
            raise ValueError("the vocabulary is empty; the dataset has no category to train or evaluate")
        if len(set(names)) != len(names):
            dupes = sorted({n for n in names if names.count(n) > 1})
            raise ValueError(f"category names must be unique, got duplicates {dupes}; rename them in the json")
        if max_queries is not None and max_queries < 1:
            raise ValueError(f"max_queries must be >= 1 or None (the whole vocabulary), got {max_queries}")
        self.names = names
        self.max_queries = max_queries
        self.templates = resolve_templates(list(templates) if not isinstance(templates, str) else templates)
        self._index = {n: i for i, n in enumerate(names)}

    def __call__(self, box_names: Sequence[str], rng: np.random.Generator) -> Queries:
        """box_names: [N] category name of each box. Raises ValueError for a name outside the vocabulary."""
        unknown = sorted(set(box_names) - set(self._index))
        if unknown:
            raise ValueError(
                f"box categories {unknown} are not in the vocabulary; the dataset's category filter is off"
            )
        if self.max_queries is None:
            chosen = list(self.names)
        else:
            chosen = self._sample(box_names, rng)
        position = {n: k for k, n in enumerate(chosen)}
        labels = np.asarray([position[n] for n in box_names], dtype=np.int64)  # [N]
        return Queries(texts=[self._prompt(n, rng) for n in chosen], names=chosen, labels=labels)

    def _sample(self, box_names: Sequence[str], rng: np.random.Generator) -> list[str]:
        positives = sorted(set(box_names), key=self._index.__getitem__)
        present = set(positives)
        others = [n for n in self.names if n not in present]
        num_negatives = min(len(others), max(0, self.max_queries - len(positives)))
        negatives = [others[i] for i in rng.choice(len(others), size=num_negatives, replace=False)]
        chosen = positives + negatives
        return [chosen[i] for i in rng.permutation(len(chosen))]

    def _prompt(self, name: str, rng: np.random.Generator) -> str:
        if len(self.templates) == 1:
            return self.templates[0].format(name)
        return self.templates[int(rng.integers(len(self.templates)))].format(name)
