"""CLIPSelf's label-free boxes: the image split into an m x n grid of equal cells, m and n drawn per image."""

from __future__ import annotations

import torch

from ovdet.errors import OvdetError


def random_grid_boxes(height: float, width: float, max_split: int, generator: torch.Generator) -> torch.Tensor:
    """The cells of an m x n grid over a height x width region, m, n uniform in 1..max_split.

    Args:
        height / width: the region to split, in input pixels (the image, without padding).
        max_split: largest number of rows (and of columns).
        generator: seeded, so a run's boxes are a function of its seed.
    Returns:
        [m*n, 4] xyxy in input pixels, row-major, tiling the region exactly.
    """
    if max_split < 1:
        raise OvdetError(f"max_split={max_split}; use an integer >= 1 (CLIPSelf uses up to 6)")
    if not (height > 0 and width > 0):
        raise OvdetError(f"region {height}x{width} has no area; pass the image's height and width in input pixels")
    m, n = torch.randint(1, max_split + 1, (2,), generator=generator).tolist()
    return grid_boxes(height, width, m, n)


def grid_boxes(height: float, width: float, rows: int, cols: int) -> torch.Tensor:
    """[rows*cols, 4] xyxy: the cells of a fixed rows x cols grid over a height x width region, row-major."""
    m, n = rows, cols
    ys = torch.linspace(0, float(height), m + 1)  # [m+1] row edges
    xs = torch.linspace(0, float(width), n + 1)  # [n+1] column edges
    y0, x0 = torch.meshgrid(ys[:-1], xs[:-1], indexing="ij")  # [m, n] each
    y1, x1 = torch.meshgrid(ys[1:], xs[1:], indexing="ij")  # [m, n] each
    return torch.stack([x0, y0, x1, y1], -1).reshape(-1, 4)  # [m*n, 4]


def random_grid_boxes_batch(sizes_hw: torch.Tensor, max_split: int, generator: torch.Generator) -> list[torch.Tensor]:
    """One grid per image: sizes_hw [B, 2] (height, width in input pixels) -> B tensors [m_i*n_i, 4] xyxy."""
    return [random_grid_boxes(float(h), float(w), max_split, generator) for h, w in sizes_hw.tolist()]
