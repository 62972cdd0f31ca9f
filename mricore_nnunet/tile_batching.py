"""nnU-Net's sliding-window prediction with several tiles per forward pass.

nnUNetPredictor (nnunetv2 2.8.1) sends one tile at a time through the network. With a 2D
configuration each slice of a volume is at least one tile, so a volume of 40 slices takes 40
forward passes of batch 1. A ViT encoder at small inputs is far from using the hardware at batch 1
(see docs/performance.md), so this predictor stacks up to `tile_batch_size` tiles per pass.
The tiles, the Gaussian weighting, the test-time mirroring and the accumulation in half precision
are nnU-Net's. Only the grouping differs, so the logits agree with nnU-Net's to float rounding.
"""

from __future__ import annotations

import torch
from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
from nnunetv2.inference.sliding_window_prediction import compute_gaussian
from nnunetv2.utilities.helpers import empty_cache

from mricore_nnunet.inference import DEFAULT_TILE_BATCH_SIZE


class TileBatchingPredictor(nnUNetPredictor):
    """A predictor like nnUNetPredictor that sends `tile_batch_size` sliding-window tiles per network call."""

    def __init__(self, *args, tile_batch_size: int = DEFAULT_TILE_BATCH_SIZE, **kwargs):
        if tile_batch_size < 1:
            raise ValueError(f"tile_batch_size must be at least 1, got {tile_batch_size}.")
        super().__init__(*args, **kwargs)
        self.tile_batch_size = tile_batch_size

    def _internal_predict_sliding_window_return_logits(self, data: torch.Tensor, slicers,
                                                       do_on_device: bool = True) -> torch.Tensor:
        results_device = self.device if do_on_device else torch.device("cpu")
        empty_cache(self.device)
        data = data.to(results_device)
        logits = torch.zeros((self.label_manager.num_segmentation_heads, *data.shape[1:]), dtype=torch.half,
                             device=results_device)
        weights = torch.zeros(data.shape[1:], dtype=torch.half, device=results_device)
        if self.use_gaussian:
            gaussian = compute_gaussian(tuple(self.configuration_manager.patch_size), sigma_scale=1.0 / 8,
                                        value_scaling_factor=10, device=results_device)
        else:
            gaussian = 1

        slicers = list(slicers)
        for start in range(0, len(slicers), self.tile_batch_size):
            group = slicers[start:start + self.tile_batch_size]
            tiles = torch.stack([data[tile] for tile in group]).to(self.device)
            predictions = self._internal_maybe_mirror_and_predict(tiles).to(results_device)
            for prediction, tile in zip(predictions, group):
                if self.use_gaussian:
                    prediction = prediction * gaussian
                logits[tile] += prediction
                weights[tile[1:]] += gaussian
            del tiles, predictions

        torch.div(logits, weights, out=logits)
        if torch.isinf(logits).any():
            raise RuntimeError("Infinite values in the predicted logits, because the half-precision accumulation "
                               "overflowed. Predict the case with nnUNetv2_predict to compare, and report it.")
        return logits
