"""Reading images with SimpleITK and the per-file checks: readability, dimensions, size, geometry,
non-finite intensities and label values. Also the two repair helpers that write corrected copies."""

from __future__ import annotations

import gzip
import logging
import math
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import SimpleITK as sitk

from .problems import (Problem, ValidationError, format_direction, format_label_set, format_size,
                       format_values, format_vector)

logger = logging.getLogger(__name__)

# Tolerances for "same voxel grid": spacing relative, origin in mm, direction cosines absolute.
SPACING_RTOL = 1e-3
ORIGIN_ATOL_MM = 1e-3
DIRECTION_ATOL = 1e-4

# An in-plane axis of fewer than 4 voxels points to a wrong export (a single row or a thumbnail), not a scan.
MIN_IN_PLANE_SIZE = 4

REPLACE_NONFINITE_FIX = (
    "Re-run with --replace-nonfinite, which replaces them in a copy by the minimum finite value of each "
    "image (function mricore_nnunet.validation.replace_nonfinite), or fix the export that produced them.")


class UnreadableImageError(Exception):
    """An image file that SimpleITK cannot read completely. The message is the reader's error."""


@dataclass(frozen=True)
class ImageInfo:
    """Header geometry and voxel statistics of one image file."""

    size: tuple[int, ...]
    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    direction: tuple[float, ...]
    components: int
    nan_count: int = 0
    inf_count: int = 0
    # Sorted distinct voxel values, only filled for label files.
    values: np.ndarray | None = None

    @property
    def dimension(self) -> int:
        return len(self.size)


def read_image(path: str | os.PathLike) -> sitk.Image:
    """Read an image with all its voxel data. Raises UnreadableImageError with the reader's message."""
    return _load(Path(path))[0]


def read_header_size(path: str | os.PathLike) -> tuple[int, ...] | None:
    """Return the voxel size from the image header only, or None when the header cannot be read."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return None
    return tuple(int(n) for n in reader.GetSize())


def inspect_image(path: str | os.PathLike, *, with_values: bool = False) -> ImageInfo:
    """Read a file completely and return its geometry, NaN and Inf counts and, for labels, its values."""
    image, raw = _load(Path(path))
    array = sitk.GetArrayViewFromImage(image)
    if raw is not None and raw.nan_mask is not None:
        nan_count = int(np.count_nonzero(raw.nan_mask))
        inf_count = int(np.count_nonzero(raw.inf_mask))
    elif np.issubdtype(array.dtype, np.inexact):
        nan_count = int(np.count_nonzero(np.isnan(array)))
        inf_count = int(np.count_nonzero(np.isinf(array)))
    else:
        nan_count = inf_count = 0
    values = np.unique(array) if with_values else None
    return ImageInfo(
        size=tuple(int(n) for n in image.GetSize()),
        spacing=tuple(float(s) for s in image.GetSpacing()),
        origin=tuple(float(o) for o in image.GetOrigin()),
        direction=tuple(float(d) for d in image.GetDirection()),
        components=int(image.GetNumberOfComponentsPerPixel()),
        nan_count=nan_count,
        inf_count=inf_count,
        values=values,
    )


def unreadable_problem(file: str, reason: str) -> Problem:
    return Problem(file, f"an unreadable file ({reason})", "a complete image file that SimpleITK can read",
                   "Copy or export the file again. A download or copy that was cut short is the usual cause.")


def shape_problems(info: ImageInfo, file: str, *, num_channels: int, case_id: str,
                   is_label: bool = False, check_size: bool = True) -> list[Problem]:
    """Check the pixel type (scalar), the dimension (2D or 3D) and, unless disabled, the minimum size."""
    problems = []
    if info.components > 1:
        problems.append(Problem(
            file, f"a vector image with {info.components} components per voxel", "one scalar value per voxel",
            "Save each component as its own channel file (<case>_0000, <case>_0001, ...)." if not is_label
            else "Save the mask as a scalar integer image."))
    if info.dimension == 4:
        problems.append(label_4d_problem(file, info.size) if is_label
                        else four_d_problem(file, info.size, num_channels, case_id))
    elif info.dimension not in (2, 3):
        problems.append(Problem(file, f"a {info.dimension}D image of {format_size(info.size)} voxels",
                                "a 2D or 3D image", "Export the scan as a 2D or 3D image."))
    elif check_size:
        small = size_problem(info, file)
        if small is not None:
            problems.append(small)
    return problems


def four_d_problem(file: str, size: Sequence[int], num_channels: int, case_id: str) -> Problem:
    """Describe a 4D file where one 3D file per channel is expected."""
    if size[3] == num_channels:
        return Problem(
            file,
            f"a 4D image of {format_size(size)} voxels that contains all {num_channels} channels in its 4th "
            f"dimension (MSD style)",
            f"one 3D file per channel ({case_id}_0000 ... {case_id}_{num_channels - 1:04d})",
            f"Split it with mricore_nnunet.validation.split_4d_channels('{file}', OUTPUT_FOLDER, '{case_id}', "
            f"{num_channels}) into a new folder, or convert the whole MSD task with "
            f"`nnUNetv2_convert_MSD_dataset -i TaskXX_Name`.")
    return Problem(
        file,
        f"a 4D image of {format_size(size)} voxels whose 4th dimension ({size[3]}) does not match the channel "
        f"count ({num_channels})",
        "a 3D image",
        "If the 4th dimension is time (for example a cine series), split the series into separate cases: one "
        "3D image per time point, each with its own label file. If it holds channels, declare all of them in "
        "channel_names of dataset.json.")


def label_4d_problem(file: str, size: Sequence[int]) -> Problem:
    return Problem(file, f"a 4D label of {format_size(size)} voxels", "a 3D label on the grid of its image",
                   "Save one 3D mask per case. A time series must be split into separate cases.")


def in_plane_sizes(size: Sequence[int], spacing: Sequence[float]) -> tuple[tuple[int, ...], int]:
    """Return the in-plane sizes and the slice count of a 2D or 3D image.

    The slice axis is the axis with the largest spacing, and the z axis when spacings are equal,
    which is how nnU-Net picks the axis that its 2D configuration slices along.
    """
    if len(size) == 2:
        return (int(size[0]), int(size[1])), 1
    largest = max(spacing)
    slice_axis = next(axis for axis in (2, 1, 0) if spacing[axis] >= largest * (1 - SPACING_RTOL))
    in_plane = tuple(int(size[axis]) for axis in range(3) if axis != slice_axis)
    return in_plane, int(size[slice_axis])


def size_problem(info: ImageInfo, file: str) -> Problem | None:
    in_plane, slices = in_plane_sizes(info.size, info.spacing)
    if min(in_plane) >= MIN_IN_PLANE_SIZE and slices >= 1:
        return None
    return Problem(
        file,
        f"an image of {format_size(info.size)} voxels ({format_size(in_plane)} in-plane, {slices} slices)",
        f"at least {MIN_IN_PLANE_SIZE} voxels along each in-plane axis and at least 1 slice",
        "Check that the file holds the whole scan and not a single row or a thumbnail.")


def geometry_differences(info: ImageInfo, reference: ImageInfo) -> tuple[list[str], list[str]]:
    """Return the fields in which `info` differs from `reference`, formatted as (found, expected) lists."""
    if info.dimension != reference.dimension:
        return ([f"{info.dimension}D size {format_size(info.size)}"],
                [f"{reference.dimension}D size {format_size(reference.size)}"])
    found, expected = [], []
    if info.size != reference.size:
        found.append(f"size {format_size(info.size)}")
        expected.append(f"size {format_size(reference.size)}")
    if not _close_relative(info.spacing, reference.spacing, SPACING_RTOL):
        found.append(f"spacing {format_vector(info.spacing, 'mm')}")
        expected.append(f"spacing {format_vector(reference.spacing, 'mm')}")
    if not np.allclose(info.origin, reference.origin, rtol=0, atol=ORIGIN_ATOL_MM):
        found.append(f"origin {format_vector(info.origin, 'mm')}")
        expected.append(f"origin {format_vector(reference.origin, 'mm')}")
    if not np.allclose(info.direction, reference.direction, rtol=0, atol=DIRECTION_ATOL):
        found.append(f"direction {format_direction(info.direction)}")
        expected.append(f"direction {format_direction(reference.direction)}")
    return found, expected


def geometry_problem(file: str, info: ImageInfo, reference_file: str, reference: ImageInfo,
                     *, is_label: bool) -> Problem | None:
    """Describe every geometry field in which a label or extra channel differs from the case's channel 0."""
    found, expected = geometry_differences(info, reference)
    if not found:
        return None
    role = "label" if is_label else "channel"
    if is_label:
        fix = ("Image and label of a case must share one voxel grid: resample the label onto the image with "
               "nearest-neighbour interpolation, or check that the label belongs to this case.")
    else:
        fix = ("All channels of a case must share one voxel grid: register and resample this channel onto "
               "channel 0000.")
    return Problem(file, f"a {role} with " + ", ".join(found),
                   ", ".join(expected) + f" as in the image {reference_file}", fix)


def nonfinite_problem(files: Sequence[tuple[str, int, int]]) -> Problem:
    """Describe NaN and Inf voxels of one case, given (file, NaN count, Inf count) for each affected file."""
    names = ", ".join(file for file, _, _ in files)
    if len(files) == 1:
        _, nan_count, inf_count = files[0]
        found = f"{nan_count} NaN and {inf_count} Inf voxels"
    else:
        found = ", ".join(f"{nan} NaN and {inf} Inf voxels in {Path(file).name}" for file, nan, inf in files)
    return Problem(names, found, "finite intensities only", REPLACE_NONFINITE_FIX)


def label_value_problems(file: str, values: np.ndarray, declared: set[int]) -> list[Problem]:
    """Check that a mask contains only integer values declared in dataset.json."""
    problems = []
    finite = values[np.isfinite(values)] if np.issubdtype(values.dtype, np.inexact) else values
    non_integer = [v for v in values.tolist() if not math.isfinite(v) or v != round(v)]
    if non_integer:
        problems.append(Problem(
            file, f"non-integer label values {format_values(non_integer)}", "integer label values",
            "Export or resample the mask with nearest-neighbour interpolation, because linear interpolation and "
            "probability maps create fractional values."))

    found = {int(v) for v in finite.tolist() if v == round(v)}
    undeclared = found - declared
    if undeclared:
        problems.append(Problem(
            file,
            f"label values {format_values(found)}, of which {format_values(undeclared)} are not declared",
            f"only the label values declared in dataset.json: {format_label_set(declared)}",
            "Relabel the mask to the declared values (for example map 100 and 200 to 1 and 2), or declare the "
            "extra values in labels of dataset.json, keeping them consecutive from 0."))
    return problems


def replace_nonfinite(src_file: str | os.PathLike, dst_file: str | os.PathLike,
                      value: float | None = None) -> tuple[int, int]:
    """Write a copy of an image with NaN and +-Inf voxels replaced, and return (NaN count, Inf count).

    The replacement defaults to the minimum finite value of the image. Spacing, origin and direction
    are kept. Raises ValidationError when dst_file is src_file, or when the image has no finite voxel
    and no value is given.
    """
    src, dst = Path(src_file), Path(dst_file)
    if _same_file(src, dst):
        raise ValidationError([_overwrite_source_problem(dst)], "replace_nonfinite does not overwrite its input")
    try:
        image, raw = _load(src)
    except UnreadableImageError as error:
        raise ValidationError([unreadable_problem(str(src), str(error))], f"Cannot read {src}") from error

    array = sitk.GetArrayFromImage(image)
    if raw is not None and raw.nan_mask is not None and raw.nan_mask.size == array.size:
        nan_mask = raw.nan_mask.reshape(array.shape)
        inf_mask = raw.inf_mask.reshape(array.shape)
    elif np.issubdtype(array.dtype, np.inexact):
        nan_mask, inf_mask = np.isnan(array), np.isinf(array)
    else:
        nan_mask = inf_mask = np.zeros(array.shape, bool)
    nan_count = int(np.count_nonzero(nan_mask))
    inf_count = int(np.count_nonzero(inf_mask))
    nonfinite = nan_mask | inf_mask
    if nonfinite.any():
        if value is None:
            value = _minimum_finite(array, nonfinite, src)
        array[nonfinite] = value

    copy = sitk.GetImageFromArray(array, isVector=image.GetNumberOfComponentsPerPixel() > 1)
    copy.CopyInformation(image)
    dst.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(copy, str(dst))
    logger.info("Wrote %s with %d NaN and %d Inf voxels of %s replaced by %s",
                dst, nan_count, inf_count, src, value)
    return nan_count, inf_count


def split_4d_channels(src_file: str | os.PathLike, out_dir: str | os.PathLike, case_id: str,
                      num_channels: int, file_ending: str = ".nii.gz") -> list[str]:
    """Split an MSD-style 4D image into one 3D file per channel and return the written paths.

    Writes <out_dir>/<case_id>_0000<file_ending>, ..., keeping the 3D spacing, origin and direction.
    Raises ValidationError when the image is not 4D, its 4th dimension differs from num_channels,
    or an output path is the source file.
    """
    src, out = Path(src_file), Path(out_dir)
    if not case_id or "/" in case_id or "\\" in case_id:
        raise ValidationError([Problem(str(src), f"case id {case_id!r}", "a non-empty case id without slashes",
                                       "Pass the case name, for example 'prostate_00'.")],
                              "Invalid case id for split_4d_channels")
    image = _read_or_raise(src)
    size = tuple(image.GetSize())
    if image.GetDimension() != 4:
        raise ValidationError([Problem(
            str(src), f"a {image.GetDimension()}D image of {format_size(size)} voxels",
            "a 4D image with the channels in its 4th dimension",
            f"Only MSD-style 4D files need splitting. Rename a 3D file to {case_id}_0000{file_ending} instead.")],
            "split_4d_channels needs a 4D image")
    if size[3] != num_channels:
        raise ValidationError([Problem(
            str(src), f"a 4D image of {format_size(size)} voxels with {size[3]} entries in the 4th dimension",
            f"{num_channels} entries, one per channel of the dataset",
            "If the 4th dimension is time, split the series into separate cases instead. If it contains "
            "channels, declare all of them in channel_names of dataset.json.")],
            "split_4d_channels: channel count mismatch")

    outputs = [out / f"{case_id}_{channel:04d}{file_ending}" for channel in range(num_channels)]
    for path in outputs:
        if _same_file(src, path):
            raise ValidationError([_overwrite_source_problem(path)], "split_4d_channels does not overwrite its input")
    out.mkdir(parents=True, exist_ok=True)
    for channel, path in enumerate(outputs):
        volume = sitk.Extract(image, [size[0], size[1], size[2], 0], [0, 0, 0, channel],
                              sitk.ExtractImageFilter.DIRECTIONCOLLAPSETOSUBMATRIX)
        sitk.WriteImage(volume, str(path))
    logger.info("Split %s into %d channel files in %s", src, num_channels, out)
    return [str(path) for path in outputs]


def _read_or_raise(path: Path) -> sitk.Image:
    try:
        return _load(path)[0]
    except UnreadableImageError as error:
        raise ValidationError([unreadable_problem(str(path), str(error))], f"Cannot read {path}") from error


def _minimum_finite(array: np.ndarray, nonfinite: np.ndarray, src: Path) -> float:
    finite = array[~nonfinite]
    if finite.size == 0:
        raise ValidationError([Problem(
            str(src), "no finite voxel (all voxels are NaN or Inf)", "at least one finite voxel",
            "Pass value=... to choose the replacement, or check the export of this image.")],
            "replace_nonfinite needs a finite voxel for its default value")
    return float(finite.min())


def _overwrite_source_problem(path: Path) -> Problem:
    return Problem(str(path), "the source file as output path", "an output path different from the source",
                   "Write the copy to another file or folder. Input files are never overwritten.")


def _same_file(a: Path, b: Path) -> bool:
    if a.resolve() == b.resolve():
        return True
    return a.exists() and b.exists() and os.path.samefile(a, b)


def _close_relative(a: Sequence[float], b: Sequence[float], rtol: float) -> bool:
    return all(abs(x - y) <= rtol * max(abs(x), abs(y)) for x, y in zip(a, b))


def _short_reader_error(error: RuntimeError) -> str:
    # SimpleITK errors span several lines with source locations, and the line with "ERROR" names the failure.
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    errors = [line for line in lines if "ERROR" in line or "error" in line.lower()]
    message = (errors or lines or [type(error).__name__])[-1]
    return message[:300]


@dataclass(frozen=True)
class _RawNifti:
    """Result of reading the raw bytes of a NIfTI file."""

    truncation: str | None = None
    # Flat masks in the voxel order of SimpleITK's array, or None when the data type cannot store NaN or Inf.
    nan_mask: np.ndarray | None = None
    inf_mask: np.ndarray | None = None


@dataclass(frozen=True)
class _NiftiLayout:
    vox_offset: int
    voxel_count: int
    bits_per_voxel: int
    dtype: np.dtype | None

    @property
    def end(self) -> int:
        return self.vox_offset + self.voxel_count * self.bits_per_voxel // 8


# NIfTI datatype codes of the float and complex types that can hold NaN and Inf.
_NIFTI_FLOAT_TYPES = {16: "f4", 64: "f8", 32: "c8", 1792: "c16"}


def _load(path: Path) -> tuple[sitk.Image, _RawNifti | None]:
    raw = _read_raw_nifti(path)
    if raw is not None and raw.truncation is not None:
        raise UnreadableImageError(raw.truncation)
    try:
        return sitk.ReadImage(str(path)), raw
    except RuntimeError as error:
        raise UnreadableImageError(_short_reader_error(error)) from error


def _read_raw_nifti(path: Path) -> _RawNifti | None:
    """Check that a NIfTI file is complete and find its NaN and Inf voxels. Returns None for other formats.

    NOTE: SimpleITK 2.5.7 reads a .nii or .nii.gz that was cut short without raising (the missing
    voxels become 0), and its NIfTI reader turns NaN and Inf voxels into 0. So this reads the whole
    file itself, compares its length with the size that the header declares, and counts NaN and Inf
    in the stored voxel data.
    """
    name = path.name.lower()
    if not (name.endswith(".nii") or name.endswith(".nii.gz")):
        return None
    try:
        if name.endswith(".gz"):
            with gzip.open(path, "rb") as stream:
                data = stream.read()
        else:
            data = path.read_bytes()
    except (EOFError, OSError, zlib.error) as error:
        return _RawNifti(truncation=f"{type(error).__name__}: {error}")

    layout = _nifti_layout(data[:544])
    if layout is None:
        # Not a single-file NIfTI header that this parser supports, so SimpleITK alone decides about the file.
        return _RawNifti()
    if len(data) < layout.end:
        return _RawNifti(truncation=f"file cut short: {len(data)} bytes of NIfTI data but the header "
                                    f"declares {layout.end} (header and voxel data)")
    if layout.dtype is None:
        return _RawNifti()
    voxels = np.frombuffer(data, dtype=layout.dtype, count=layout.voxel_count, offset=layout.vox_offset)
    return _RawNifti(nan_mask=np.isnan(voxels), inf_mask=np.isinf(voxels))


def _nifti_layout(header: bytes) -> _NiftiLayout | None:
    """Parse data offset, voxel count and data type from a single-file NIfTI-1 or NIfTI-2 header."""
    if len(header) < 348:
        return None
    for order in "<>":
        (header_size,) = struct.unpack(order + "i", header[:4])
        if header_size == 348 and header[344:347] == b"n+1":
            (datatype,) = struct.unpack(order + "h", header[70:72])
            (bits_per_voxel,) = struct.unpack(order + "h", header[72:74])
            dims = struct.unpack(order + "8h", header[40:56])
            (vox_offset,) = struct.unpack(order + "f", header[108:112])
        elif header_size == 540 and len(header) >= 540 and header[4:7] == b"n+2":
            (datatype,) = struct.unpack(order + "h", header[12:14])
            (bits_per_voxel,) = struct.unpack(order + "h", header[14:16])
            dims = struct.unpack(order + "8q", header[16:80])
            (vox_offset,) = struct.unpack(order + "q", header[168:176])
        else:
            continue
        ndim = dims[0]
        if not 1 <= ndim <= 7 or any(d <= 0 for d in dims[1:ndim + 1]) or bits_per_voxel <= 0:
            return None
        float_type = _NIFTI_FLOAT_TYPES.get(datatype)
        return _NiftiLayout(
            vox_offset=int(vox_offset),
            voxel_count=math.prod(dims[1:ndim + 1]),
            bits_per_voxel=bits_per_voxel,
            dtype=np.dtype(order + float_type) if float_type else None,
        )
    return None
