"""Planning decisions for the 2D ViT configuration, kept free of nnU-Net's planner classes.

The planner in `planners/` calls these functions; they are tested on plain numbers here.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Sequence

import numpy as np

from mricore_nnunet.encoder import MINMAX_IMAGENET, PATCH_SIZE, check_input_size, get_preset
from mricore_nnunet.network import DECODER_STRIDES, DEFAULT_DECODER_CHANNELS

logger = logging.getLogger(__name__)

NETWORK_CLASS_NAME = "mricore_nnunet.network.MRICoreSegmentationNetwork"
PLANS_NAME = "MRICorePlans"
DEFAULT_INPUT_SIZE = 256
# Decoder channels by encoder width: the tiny encoder gets a decoder of matching size.
SMALL_DECODER_CHANNELS = (16, 32, 64, 128)

BYTES_PER_FLOAT = 4
GIB = 1024**3


def decoder_channels_for(preset: str) -> tuple[int, ...]:
    return SMALL_DECODER_CHANNELS if get_preset(preset).embed_dim < 256 else DEFAULT_DECODER_CHANNELS


def inplane_target_spacing(
    median_spacing: Sequence[float], median_shape: Sequence[float], input_size: int
) -> list[float]:
    """Return one in-plane spacing (mm) at which the median slice's longer side fills `input_size` pixels.

    `median_spacing` and `median_shape` are the two in-plane axes. The spacing is the same along both
    axes, so slices keep their aspect ratio; there is no through-plane resampling in 2D.
    """
    extent_mm = max(float(s) * float(n) for s, n in zip(median_spacing, median_shape))
    spacing = extent_mm / input_size
    return [spacing, spacing]


def estimate_training_memory_gib(
    preset: str, img_size: int, batch_size: int, num_classes: int = 2, gradient_checkpointing: bool = False
) -> float:
    """Estimate the peak memory (GiB) of one fp32 training step of the segmentation network.

    An estimate from counting stored activations, calibrated against timm's SAM ViT-B on the CPU:
    1.45 GiB at 256 px and 10.1 GiB at 1024 px for batch 1 (measured with torch 2.14 on 2 cores).
    Mixed precision on a GPU needs less, so the estimate errs on the safe side there. With gradient
    checkpointing only each block's input is stored, plus one block's activations during recompute.
    """
    p = get_preset(preset)
    tokens = (img_size // PATCH_SIZE) ** 2
    num_global = len(p.global_attn_indexes)
    num_window = p.depth - num_global
    # Windows cover a grid padded up to a multiple of the window size.
    padded_side = math.ceil(img_size / PATCH_SIZE / p.window_size) * p.window_size
    window_tokens = padded_side**2

    num_parameters = 12 * p.depth * p.embed_dim**2 + 10 * p.embed_dim * p.neck_chans
    # Weights, gradients and the two AdamW moments.
    static_bytes = 4 * num_parameters * BYTES_PER_FLOAT

    block_bytes = p.depth * tokens * p.embed_dim * 20 * BYTES_PER_FLOAT
    # Attention scores and their softmax, kept for the backward pass.
    global_attention_bytes = num_global * tokens**2 * p.num_heads * 2 * BYTES_PER_FLOAT
    window_attention_bytes = num_window * window_tokens * p.window_size**2 * p.num_heads * 2 * BYTES_PER_FLOAT
    channels = decoder_channels_for(preset)
    decoder_bytes = sum(c * (img_size / 2**level) ** 2 * 12 for level, c in enumerate(channels)) * BYTES_PER_FLOAT
    decoder_bytes += num_classes * img_size**2 * 4 * BYTES_PER_FLOAT
    if gradient_checkpointing:
        block_bytes = block_bytes / 20 + block_bytes / p.depth
        largest_attention = max(tokens**2, window_tokens * p.window_size**2) * p.num_heads * 2 * BYTES_PER_FLOAT
        global_attention_bytes, window_attention_bytes = largest_attention, 0
    per_sample = block_bytes + global_attention_bytes + window_attention_bytes + decoder_bytes
    return (static_bytes + batch_size * per_sample) / GIB


def choose_batch_size_and_input_size(
    preset: str,
    input_size: int,
    memory_gib: float,
    max_batch_size: int,
    min_batch_size: int = 2,
    num_classes: int = 2,
    gradient_checkpointing: bool = False,
) -> tuple[int, int]:
    """Pick the largest batch that fits `memory_gib`, shrinking the input size when even the minimum does not fit.

    Returns (batch_size, input_size). The batch is capped at `max_batch_size` (nnU-Net caps it so one
    step covers at most 5% of the dataset) and never below `min_batch_size`.
    """
    check_input_size(input_size, input_size)

    def estimate(size: int, batch: int) -> float:
        return estimate_training_memory_gib(preset, size, batch, num_classes, gradient_checkpointing)

    size = input_size
    while estimate(size, min_batch_size) > memory_gib:
        smaller = max(PATCH_SIZE * 4, (size // 2) // PATCH_SIZE * PATCH_SIZE)
        if smaller == size:
            raise ValueError(
                f"Even a batch of {min_batch_size} at {size} px with the {preset} encoder needs about "
                f"{estimate(size, min_batch_size):.1f} GiB, more than the "
                f"{memory_gib:.1f} GiB target. Use a smaller preset or a device with more memory."
            )
        hint = "" if gradient_checkpointing else " Planning with --gradient-checkpointing needs less memory."
        logger.warning(
            "A batch of %d at %d px with the %s encoder needs about %.1f GiB, more than the %.1f GiB target; "
            "planning with %d px instead.%s",
            min_batch_size, size, preset, estimate(size, min_batch_size), memory_gib, smaller, hint,
        )
        size = smaller

    batch = min_batch_size
    while batch < max_batch_size and estimate(size, batch + 1) <= memory_gib:
        batch += 1
    return batch, size


def dataset_batch_cap(median_shape_2d: Sequence[float], num_slices_total: float, patch_size: Sequence[int]) -> int:
    """Return nnU-Net's cap on the batch size: one step covers at most 5% of the voxels in the dataset."""
    dataset_voxels = float(np.prod(median_shape_2d)) * num_slices_total
    return int(round(dataset_voxels * 0.05 / float(np.prod(patch_size))))


def architecture_entry(
    preset: str, input_size: int, normalization: dict[str, Any] | None = None, gradient_checkpointing: bool = False
) -> dict[str, Any]:
    """Return the plans' `architecture` block from which nnU-Net rebuilds the network anywhere."""
    return {
        "network_class_name": NETWORK_CLASS_NAME,
        "arch_kwargs": {
            "preset": preset,
            "img_size": input_size,
            "normalization": dict(normalization or MINMAX_IMAGENET),
            "decoder_channels": list(decoder_channels_for(preset)),
            "feature_indices": None,
            "finetune": "full",
            "strides": DECODER_STRIDES,
            "gradient_checkpointing": gradient_checkpointing,
        },
        "_kw_requires_import": [],
    }


def round_up_to_patch_multiple(patch_size: Sequence[int], minimum: int = 4 * PATCH_SIZE) -> list[int]:
    """Round each side up to a multiple of 16 pixels and at least `minimum`."""
    return [max(minimum, math.ceil(int(s) / PATCH_SIZE) * PATCH_SIZE) for s in patch_size]
