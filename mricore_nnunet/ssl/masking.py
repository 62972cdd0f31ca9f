"""Block masks of patch positions for the iBOT masked-patch loss, after BEiT (Bao et al., 2022)."""

from __future__ import annotations

import math

import torch


def block_mask(grid: int, num_masked: int, generator: torch.Generator, min_block: int = 4,
               max_attempts: int = 10) -> torch.Tensor:
    """Return a grid x grid boolean mask with about `num_masked` True entries, placed as rectangles.

    Rectangles of random area (at least `min_block` patches) and aspect ratio in [0.3, 3.3] are
    added until the count is reached or `max_attempts` rectangles in a row add nothing, so the
    count can fall short by a few patches.
    """
    mask = torch.zeros(grid, grid, dtype=torch.bool)
    failures = 0
    while int(mask.sum()) < num_masked and failures < max_attempts:
        remaining = num_masked - int(mask.sum())
        area = min_block + float(torch.rand((), generator=generator)) * max(0, remaining - min_block)
        aspect = math.exp(math.log(0.3) + float(torch.rand((), generator=generator)) * 2 * math.log(1 / 0.3))
        height = max(1, min(grid, int(round(math.sqrt(area * aspect)))))
        width = max(1, min(grid, int(round(math.sqrt(area / aspect)))))
        top = int(torch.randint(0, grid - height + 1, (), generator=generator))
        left = int(torch.randint(0, grid - width + 1, (), generator=generator))

        block = mask[top:top + height, left:left + width]
        added = int((~block).sum())
        if added == 0 or added > remaining:
            failures += 1
            continue
        block[:] = True
        failures = 0
    return mask


def draw_masks(num_crops: int, grid: int, probability: float, ratio_min: float, ratio_max: float,
               generator: torch.Generator) -> torch.Tensor:
    """Return num_crops x grid x grid masks: each crop is masked with `probability`, at a ratio in [ratio_min, ratio_max]."""
    masks = torch.zeros(num_crops, grid, grid, dtype=torch.bool)
    for index in range(num_crops):
        if float(torch.rand((), generator=generator)) >= probability:
            continue
        ratio = ratio_min + float(torch.rand((), generator=generator)) * (ratio_max - ratio_min)
        masks[index] = block_mask(grid, int(round(ratio * grid * grid)), generator)
    return masks
