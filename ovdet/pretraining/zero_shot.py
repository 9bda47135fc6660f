"""Zero-shot classification of single-object crops, CLIP's recipe: the best-matching prompt wins.

Shape: 16-way over every ShapeWorld shape with "a photo of a {}.", reported for crops of base
and of novel shapes separately (the gate before detector training). Colour: 12-way, each
colour's text embedding averaged over "a photo of a {colour} {shape}." for every shape.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

TextEncoder = Callable[[list[str]], torch.Tensor]  # texts -> [N, E]


@dataclass(frozen=True)
class ZeroShotTask:
    """The names crops are classified by, and the prompt for shapes."""

    shapes: tuple[str, ...]
    novel: tuple[str, ...]
    colors: tuple[str, ...]
    shape_template: str = "a photo of a {}."
    color_template: str = "a photo of a {} {}."  # colour, then shape

    @classmethod
    def shapeworld(cls) -> "ZeroShotTask":
        """All 16 ShapeWorld shapes (12 base, 4 novel) and its 12 colours."""
        from ovdet.data.shapeworld import COLORS, load_split

        split = load_split()
        return cls(shapes=split.shapes, novel=split.novel, colors=tuple(COLORS))


def prompt_embeddings(encode: TextEncoder, prompts: list[list[str]]) -> torch.Tensor:
    """One L2-normalised embedding per class, the mean of its prompts' embeddings: [K, E]."""
    flat = [p for group in prompts for p in group]
    embeds = F.normalize(encode(flat).float(), dim=-1)  # [sum of prompts, E]
    sizes = [len(group) for group in prompts]
    return F.normalize(torch.stack([chunk.mean(0) for chunk in embeds.split(sizes)]), dim=-1)  # [K, E]


def classify(image_embeds: torch.Tensor, class_embeds: torch.Tensor) -> torch.Tensor:
    """Index of the most similar class per image: [N, E] x [K, E] -> [N]."""
    sim = F.normalize(image_embeds.float(), dim=-1) @ class_embeds.T  # [N, K]
    return sim.argmax(-1)


@torch.no_grad()
def zero_shot_metrics(
    encode: TextEncoder,
    image_embeds: torch.Tensor,
    shape_labels: torch.Tensor,
    color_labels: torch.Tensor,
    task: ZeroShotTask,
) -> dict[str, float]:
    """Accuracies in [0, 1]: `shape_acc` (all crops), `shape_acc_base`, `shape_acc_novel`, `color_acc`.

    Args:
        encode: the text tower, texts -> [N, E].
        image_embeds: [N, E] embeddings of the crops.
        shape_labels / color_labels: [N] indices into `task.shapes` / `task.colors`.
    """
    shapes = prompt_embeddings(encode, [[task.shape_template.format(s)] for s in task.shapes])
    colors = prompt_embeddings(encode, [[task.color_template.format(c, s) for s in task.shapes] for c in task.colors])
    shape_hit = (classify(image_embeds, shapes.to(image_embeds.device)) == shape_labels).float()  # [N]
    color_hit = (classify(image_embeds, colors.to(image_embeds.device)) == color_labels).float()  # [N]
    novel = torch.tensor([task.shapes[i] in task.novel for i in shape_labels.tolist()], device=shape_hit.device)
    return {
        "shape_acc": _mean(shape_hit),
        "shape_acc_base": _mean(shape_hit[~novel]),
        "shape_acc_novel": _mean(shape_hit[novel]),
        "color_acc": _mean(color_hit),
    }


def _mean(x: torch.Tensor) -> float:
    return float(x.mean()) if len(x) else float("nan")
