"""Multi-crop augmentation for MRI slices: geometry and intensity changes, no colour jitter.

All randomness comes from the `torch.Generator` passed in, so a crop set is a function of its
seed. The pre-training seeds it from (run seed, sample position), which makes a resumed run
draw exactly the crops of an uninterrupted one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class CropSettings:
    """Output size and augmentation strengths of one kind of crop (global or local)."""

    size: int
    scale: tuple[float, float]
    blur_probability: float
    max_rotation_degrees: float = 10.0
    flip_probability: float = 0.5
    gamma_probability: float = 0.5
    gamma_range: tuple[float, float] = (0.7, 1.5)
    contrast_probability: float = 0.5
    contrast_range: tuple[float, float] = (0.75, 1.25)
    noise_probability: float = 0.3
    max_noise_std: float = 0.05
    blur_sigma: tuple[float, float] = (0.1, 1.0)


def _uniform(generator: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def _chance(generator: torch.Generator, probability: float) -> bool:
    return float(torch.rand((), generator=generator)) < probability


def crop_geometry(height: int, width: int, settings: CropSettings, generator: torch.Generator) -> torch.Tensor:
    """Draw a random resized crop with flip and rotation; return the 2 x 3 affine for `F.affine_grid`.

    The crop covers `scale` of the slice area with an aspect ratio in [3/4, 4/3] and is rotated
    about its centre. The matrix maps output coordinates in [-1, 1] to input coordinates in [-1, 1].
    """
    area = height * width * _uniform(generator, *settings.scale)
    aspect = math.exp(_uniform(generator, math.log(3 / 4), math.log(4 / 3)))
    crop_w = min(float(width), math.sqrt(area * aspect))
    crop_h = min(float(height), math.sqrt(area / aspect))
    # Centre in pixels relative to the slice centre, keeping the unrotated box inside the slice.
    center_x = _uniform(generator, -(width - crop_w) / 2, (width - crop_w) / 2)
    center_y = _uniform(generator, -(height - crop_h) / 2, (height - crop_h) / 2)

    angle = math.radians(_uniform(generator, -settings.max_rotation_degrees, settings.max_rotation_degrees))
    flip_x = -1.0 if _chance(generator, settings.flip_probability) else 1.0
    flip_y = -1.0 if _chance(generator, settings.flip_probability) else 1.0

    cos, sin = math.cos(angle), math.sin(angle)
    half_w, half_h = crop_w / 2 * flip_x, crop_h / 2 * flip_y
    # Input pixel offset = R @ diag(half_w, half_h) @ output coordinate, then scaled to [-1, 1].
    return torch.tensor([
        [cos * half_w * 2 / width, -sin * half_h * 2 / width, center_x * 2 / width],
        [sin * half_w * 2 / height, cos * half_h * 2 / height, center_y * 2 / height],
    ], dtype=torch.float32)


def gaussian_blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """Blur a 1 x 1 x H x W image with a separable Gaussian of `sigma` pixels (reflect padding)."""
    radius = max(1, int(math.ceil(3 * sigma)))
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()
    radius = min(radius, image.shape[-1] - 1, image.shape[-2] - 1)
    kernel = kernel[kernel.numel() // 2 - radius: kernel.numel() // 2 + radius + 1]
    kernel = kernel / kernel.sum()
    padded = F.pad(image, (radius, radius, radius, radius), mode="reflect")
    blurred = F.conv2d(padded, kernel.view(1, 1, 1, -1))
    return F.conv2d(blurred, kernel.view(1, 1, -1, 1))


def augment_intensity(image: torch.Tensor, settings: CropSettings, generator: torch.Generator) -> torch.Tensor:
    """Apply random gamma, clipped contrast, blur and Gaussian noise to a 1 x 1 x H x W image in [0, 1].

    The encoder scales each slice by its own minimum and maximum, which undoes any affine
    intensity change, so the contrast change is clipped to [0, 1] to have an effect.
    """
    if _chance(generator, settings.gamma_probability):
        image = image.clamp_min(0.0) ** _uniform(generator, *settings.gamma_range)
    if _chance(generator, settings.contrast_probability):
        mean = image.mean()
        image = ((image - mean) * _uniform(generator, *settings.contrast_range) + mean).clamp(0.0, 1.0)
    if _chance(generator, settings.blur_probability):
        image = gaussian_blur(image, _uniform(generator, *settings.blur_sigma))
    if _chance(generator, settings.noise_probability):
        noise_std = _uniform(generator, 0.0, settings.max_noise_std)
        image = image + noise_std * torch.randn(image.shape, generator=generator)
    return image


def make_crop(slice_image: np.ndarray, settings: CropSettings, generator: torch.Generator) -> torch.Tensor:
    """Return one augmented 1 x size x size crop of an H x W slice, with intensities near [0, 1]."""
    image = torch.from_numpy(np.ascontiguousarray(slice_image, dtype=np.float32))
    low, high = float(image.min()), float(image.max())
    image = ((image - low) / max(high - low, 1e-6)).view(1, 1, *image.shape)  # 1 x 1 x H x W in [0, 1]

    theta = crop_geometry(image.shape[2], image.shape[3], settings, generator)
    grid = F.affine_grid(theta.unsqueeze(0), [1, 1, settings.size, settings.size], align_corners=False)
    # Zero padding outside the slice is the slice minimum, the usual MRI background.
    crop = F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    crop = augment_intensity(crop, settings, generator)
    return crop[0]  # 1 x size x size


class MultiCrop:
    """Two global crops and `num_local` local crops of one slice.

    As in DINO, blur is always applied to the first global crop, rarely to the second (p = 0.1)
    and to half of the local crops.
    """

    def __init__(self, global_size: int, local_size: int, num_local: int,
                 global_scale: tuple[float, float], local_scale: tuple[float, float], max_rotation_degrees: float):
        self.global_settings = [
            CropSettings(global_size, global_scale, blur_probability=1.0, max_rotation_degrees=max_rotation_degrees),
            CropSettings(global_size, global_scale, blur_probability=0.1, max_rotation_degrees=max_rotation_degrees),
        ]
        self.local_settings = CropSettings(local_size, local_scale, blur_probability=0.5,
                                           max_rotation_degrees=max_rotation_degrees)
        self.num_local = num_local

    def __call__(self, slice_image: np.ndarray, generator: torch.Generator) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Return (global crops, local crops), each a list of 1 x size x size tensors."""
        global_crops = [make_crop(slice_image, settings, generator) for settings in self.global_settings]
        local_crops = [make_crop(slice_image, self.local_settings, generator) for _ in range(self.num_local)]
        return global_crops, local_crops
