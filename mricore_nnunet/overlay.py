"""PNG overlays of label maps on their scans, for a quick visual check of predictions.

For each case a few slices are written, those with the most foreground voxels, or the middle slice
when the label map is empty. Slices are taken along the first axis of SimpleITK's array, which is the
image's third (k) axis. Each label value gets its own colour: a translucent fill with an opaque outline.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from PIL import Image

from mricore_nnunet.validation.files import image_ending

logger = logging.getLogger(__name__)

DEFAULT_NUM_SLICES = 3
# Slices are enlarged by a whole factor (nearest neighbour) until the shorter side has at least this many
# pixels, because a 40-pixel hippocampus crop is too small to judge on screen.
MIN_SIDE_PIXELS = 256
FILL_OPACITY = 0.4
# Colours of labels 1, 2, 3 and so on. Label values beyond the list reuse it from the start.
LABEL_COLOURS = (
    (230, 25, 75), (60, 180, 75), (0, 130, 200), (255, 225, 25), (245, 130, 48),
    (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212),
)


def label_colour(label: int) -> tuple[int, int, int]:
    """Return the RGB colour of a label value (label 0, the background, is never drawn)."""
    return LABEL_COLOURS[(int(label) - 1) % len(LABEL_COLOURS)]


def scale_factor(height: int, width: int) -> int:
    """Return the whole enlargement factor of a slice of height x width voxels."""
    return max(1, -(-MIN_SIDE_PIXELS // max(1, min(height, width))))


def write_overlays(images: str | os.PathLike, segmentations: str | os.PathLike, output_folder: str | os.PathLike,
                   num_slices: int = DEFAULT_NUM_SLICES) -> list[Path]:
    """Write <case>_slice<index>.png overlays for every case with both a scan and a label map.

    `images` is a folder of scans named <case>_0000<ending> (only channel 0 is shown) or one scan, and
    `segmentations` a folder of label maps <case><ending>, or one label map when `images` is one file.
    Returns the written files. Raises ValueError when no scan has a label map, or when the two differ in size.
    """
    if num_slices < 1:
        raise ValueError(f"Invalid number of slices {num_slices}; expected at least 1.")
    pairs = _pair_files(Path(images), Path(segmentations))
    output = Path(output_folder)
    output.mkdir(parents=True, exist_ok=True)
    written = []
    for case, (image_file, label_file) in pairs.items():
        written.extend(write_case_overlays(case, image_file, label_file, output, num_slices))
    logger.info("Wrote %d overlay(s) of %d case(s) to %s", len(written), len(pairs), output)
    return written


def write_case_overlays(case: str, image_file: Path, label_file: Path, output_folder: Path,
                        num_slices: int = DEFAULT_NUM_SLICES) -> list[Path]:
    """Write the overlays of one case and return their paths."""
    image = _read_volume(image_file)
    labels = np.rint(_read_volume(label_file)).astype(np.int64)
    if image.shape != labels.shape:
        raise ValueError(
            f"{label_file} has {_format_shape(labels.shape)} voxels but its scan {image_file} has "
            f"{_format_shape(image.shape)}. Pass the label map predicted from this scan.")

    grey = _to_grey(image)
    written = []
    for index in select_slices(labels, num_slices):
        rgb = render_slice(grey[index], labels[index])
        path = output_folder / f"{case}_slice{index:03d}.png"
        Image.fromarray(rgb).save(path)
        written.append(path)
    return written


def select_slices(labels: np.ndarray, num_slices: int = DEFAULT_NUM_SLICES) -> list[int]:
    """Return up to `num_slices` slice indices with the most foreground voxels, in ascending order.

    Returns the middle slice alone when the label map has no foreground.
    """
    counts = np.count_nonzero(labels.reshape(labels.shape[0], -1) > 0, axis=1)
    with_foreground = np.flatnonzero(counts)
    if with_foreground.size == 0:
        return [labels.shape[0] // 2]
    # A stable sort keeps ties in slice order, so the choice is reproducible.
    ranked = with_foreground[np.argsort(-counts[with_foreground], kind="stable")]
    return sorted(int(index) for index in ranked[:num_slices])


def render_slice(grey: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Return an enlarged RGB uint8 image of one slice with each label filled translucently and outlined."""
    factor = scale_factor(*grey.shape)
    grey = np.kron(grey, np.ones((factor, factor), dtype=grey.dtype))
    labels = np.kron(labels, np.ones((factor, factor), dtype=labels.dtype))

    rgb = np.repeat(grey[..., None], 3, axis=2).astype(np.float32)
    outline = _boundaries(labels)
    for label in np.unique(labels):
        if label <= 0:
            continue
        colour = np.array(label_colour(label), dtype=np.float32)
        inside = labels == label
        rgb[inside] = (1 - FILL_OPACITY) * rgb[inside] + FILL_OPACITY * colour
        rgb[inside & outline] = colour
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def _boundaries(labels: np.ndarray) -> np.ndarray:
    """Mark pixels whose label differs from a 4-neighbour's (image borders count as background)."""
    padded = np.pad(labels, 1, constant_values=0)
    centre = padded[1:-1, 1:-1]
    return ((centre != padded[:-2, 1:-1]) | (centre != padded[2:, 1:-1])
            | (centre != padded[1:-1, :-2]) | (centre != padded[1:-1, 2:]))


def _to_grey(volume: np.ndarray) -> np.ndarray:
    """Map intensities to 0-255 between the 1st and 99th percentile of the finite voxels of the volume."""
    finite = volume[np.isfinite(volume)]
    if finite.size == 0:
        return np.zeros(volume.shape, dtype=np.uint8)
    low, high = np.percentile(finite, [1, 99])
    if high <= low:
        high = low + 1
    scaled = (np.nan_to_num(volume, nan=low) - low) / (high - low)
    return np.clip(np.rint(scaled * 255), 0, 255).astype(np.uint8)


def _read_volume(path: Path) -> np.ndarray:
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as error:
        raise ValueError(f"Cannot read {path}: {str(error).strip().splitlines()[-1]}") from error
    if image.GetNumberOfComponentsPerPixel() > 1:
        raise ValueError(f"{path} has {image.GetNumberOfComponentsPerPixel()} components per voxel; "
                         f"expected a scalar image.")
    array = sitk.GetArrayFromImage(image).astype(np.float32)
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3:
        raise ValueError(f"{path} is a {array.ndim}D image; expected a 2D or 3D image.")
    return array


def _pair_files(images: Path, segmentations: Path) -> dict[str, tuple[Path, Path]]:
    """Return case id -> (channel-0 scan, label map)."""
    if images.is_file():
        if not segmentations.is_file():
            raise ValueError(f"{images} is one scan, so the segmentation must be one file too, but "
                             f"{segmentations} is not a file.")
        ending = image_ending(segmentations.name) or segmentations.suffix
        return {segmentations.name[: len(segmentations.name) - len(ending)]: (images, segmentations)}

    for folder, role in ((images, "scans"), (segmentations, "segmentations")):
        if not folder.is_dir():
            raise FileNotFoundError(f"The folder of {role} {folder} does not exist.")
    label_files = {}
    for path in sorted(segmentations.iterdir()):
        ending = image_ending(path.name)
        if path.is_file() and not path.name.startswith(".") and ending is not None:
            label_files[path.name[: -len(ending)]] = path

    pairs = {}
    unmatched = []
    for path in sorted(images.iterdir()):
        ending = image_ending(path.name)
        if not path.is_file() or path.name.startswith(".") or ending is None:
            continue
        stem = path.name[: -len(ending)]
        if not stem.endswith("_0000"):
            continue
        case = stem[: -len("_0000")]
        if case in label_files:
            pairs[case] = (path, label_files[case])
        else:
            unmatched.append(case)
    if unmatched:
        logger.warning("No segmentation in %s for %d scan(s), which get no overlay: %s",
                       segmentations, len(unmatched), ", ".join(unmatched))
    if not pairs:
        raise ValueError(
            f"No scan in {images} has a segmentation in {segmentations}. Expected scans <case>_0000<ending> and "
            f"label maps <case><ending> with the same case ids, as nnU-Net names them.")
    return pairs


def _format_shape(shape: tuple[int, ...]) -> str:
    return "x".join(str(n) for n in shape)
