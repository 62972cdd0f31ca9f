"""Batches of multi-crop views whose content depends only on (seed, iteration, rank).

Sample position p = iteration x global batch + rank x batch + j numbers every sample of the run.
Position p shows slice permutation_e[p mod S] of epoch e = p // S (S slices), and its crops and
masks are drawn from a generator seeded with (seed, p). So a run resumed at any iteration reads
the same images, crops and masks as an uninterrupted one, with any number of loader workers.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from .augment import MultiCrop
from .data import SliceIndex
from .masking import draw_masks

PATCH_SIZE = 16


def sample_seed(seed: int, position: int) -> int:
    """Return a 63-bit seed for sample `position` of a run seeded with `seed`."""
    return int(np.random.SeedSequence([seed, position]).generate_state(1, dtype=np.uint64)[0] >> 1)


class MultiCropDataset(Dataset):
    """Map a sample position to its multi-crop views and iBOT masks."""

    def __init__(self, slices: SliceIndex, multicrop: MultiCrop, seed: int, mask_probability: float,
                 mask_ratio: tuple[float, float]):
        self.slices = slices
        self.multicrop = multicrop
        self.seed = seed
        self.mask_probability = mask_probability
        self.mask_ratio = mask_ratio
        self._permutations: dict[int, np.ndarray] = {}

    def slice_number(self, position: int) -> int:
        """Return the slice shown at sample `position`: each epoch visits every slice once, in its own order."""
        count = len(self.slices)
        epoch = position // count
        permutation = self._permutations.get(epoch)
        if permutation is None:
            permutation = np.random.default_rng([self.seed, epoch]).permutation(count)
            self._permutations = {epoch: permutation}  # positions grow, so one epoch at a time is enough
        return int(permutation[position % count])

    def __len__(self) -> int:
        # Positions are unbounded; the sampler decides which ones are read.
        return np.iinfo(np.int64).max

    def __getitem__(self, position: int) -> dict[str, torch.Tensor]:
        generator = torch.Generator().manual_seed(sample_seed(self.seed, position))
        image = self.slices[self.slice_number(position)]
        global_crops, local_crops = self.multicrop(image, generator)
        grid = self.multicrop.global_settings[0].size // PATCH_SIZE
        masks = draw_masks(len(global_crops), grid, self.mask_probability, *self.mask_ratio, generator)
        sample = {"global": torch.stack(global_crops), "masks": masks}  # 2 x 1 x H x W, 2 x H/16 x W/16
        if local_crops:
            sample["local"] = torch.stack(local_crops)  # N x 1 x h x w
        return sample


def collate_crops(samples: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Stack B samples crop-major: row c x B + b is crop c of sample b, the order the losses expect."""
    batch = {
        "global": torch.stack([sample["global"] for sample in samples], dim=1).flatten(0, 1),  # 2B x 1 x H x W
        "masks": torch.stack([sample["masks"] for sample in samples], dim=1).flatten(0, 1),  # 2B x H/16 x W/16
    }
    if "local" in samples[0]:
        batch["local"] = torch.stack([sample["local"] for sample in samples], dim=1).flatten(0, 1)  # NB x 1 x h x w
    return batch


class IterationBatchSampler(Sampler[list[int]]):
    """Yield the sample positions of this process for iterations start .. end - 1."""

    def __init__(self, start: int, end: int, batch_size: int, rank: int = 0, world_size: int = 1):
        self.start, self.end = start, end
        self.batch_size, self.rank, self.world_size = batch_size, rank, world_size

    def __len__(self) -> int:
        return max(0, self.end - self.start)

    def __iter__(self):
        global_batch = self.batch_size * self.world_size
        for iteration in range(self.start, self.end):
            first = iteration * global_batch + self.rank * self.batch_size
            yield list(range(first, first + self.batch_size))
