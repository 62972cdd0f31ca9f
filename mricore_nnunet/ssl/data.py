"""Unlabelled MRI as an index of 2D slices, read lazily from NIfTI volumes.

Inputs may be any mix of plain folders of NIfTI files, nnU-Net raw datasets and Medical
Segmentation Decathlon (MSD) task folders. For the last two, `imagesTr` and `imagesTs` are read
and `labels*` folders are not. Each channel of a 4D file (MSD) becomes its own volume.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import SimpleITK as sitk

from ..atomic import atomic_write_text

logger = logging.getLogger(__name__)

NIFTI_SUFFIXES = (".nii.gz", ".nii")
IMAGE_FOLDERS = ("imagesTr", "imagesTs")
MANIFEST_NAME = "data_manifest.json"


@dataclass(frozen=True)
class VolumeSource:
    """One 3D volume: a file and, for 4D files, the channel."""

    path: str
    channel: int | None = None

    @property
    def name(self) -> str:
        return self.path if self.channel is None else f"{self.path}[channel {self.channel}]"


def find_nifti_files(inputs: Iterable[str | os.PathLike]) -> list[Path]:
    """Return the NIfTI files of the inputs, sorted within each input.

    A folder with an `imagesTr` or `imagesTs` subfolder is read as an nnU-Net raw dataset or
    MSD task. Any other folder contributes its NIfTI files, searched recursively, hidden files and
    `labels*` folders excepted. A file is taken as is.
    """
    files: list[Path] = []
    for entry in inputs:
        path = Path(entry)
        if path.is_file():
            files.append(path)
            continue
        if not path.is_dir():
            raise FileNotFoundError(f"Pre-training data {path} is neither a file nor a folder. Check the --data paths.")

        image_folders = [path / name for name in IMAGE_FOLDERS if (path / name).is_dir()]
        roots = image_folders or [path]
        found = []
        for root in roots:
            for candidate in sorted(root.rglob("*")):
                relative = candidate.relative_to(root).parts
                if any(part.startswith(".") or part.startswith("labels") for part in relative):
                    continue
                if candidate.is_file() and candidate.name.endswith(NIFTI_SUFFIXES):
                    found.append(candidate)
        if not found:
            raise FileNotFoundError(
                f"No NIfTI files (*.nii.gz, *.nii) in {path}. Give folders of NIfTI files, nnU-Net raw datasets "
                "or MSD task folders."
            )
        files.extend(found)

    unique = list(dict.fromkeys(file.resolve() for file in files))
    if len(unique) < len(files):
        logger.info("Dropped %d NIfTI files named more than once in the pre-training data.", len(files) - len(unique))
    return unique


def read_volumes(path: Path) -> list[tuple[VolumeSource, np.ndarray, tuple[float, float, float]]]:
    """Read a NIfTI file into one float32 z x y x x array per channel, with spacing in numpy axis order."""
    image = sitk.ReadImage(str(path))
    array = sitk.GetArrayFromImage(image)
    spacing = tuple(float(value) for value in reversed(image.GetSpacing()))  # numpy order (z, y, x, ...)
    components = image.GetNumberOfComponentsPerPixel()

    if image.GetDimension() == 4:
        # SimpleITK arrays of 4D images are t x z x y x x: MSD stores its channels on t.
        return [(VolumeSource(str(path), c), array[c].astype(np.float32), spacing[1:4]) for c in range(array.shape[0])]
    if components > 1:
        # Vector pixels: z x y x x x components.
        return [(VolumeSource(str(path), c), array[..., c].astype(np.float32), spacing) for c in range(components)]
    if image.GetDimension() == 2:
        return [(VolumeSource(str(path)), array[np.newaxis].astype(np.float32), (1.0, *spacing))]
    if image.GetDimension() != 3:
        raise ValueError(f"{path}: {image.GetDimension()}D image; pre-training reads 2D, 3D and 4D NIfTI files only.")
    return [(VolumeSource(str(path)), array.astype(np.float32), spacing)]


def acquisition_axis(spacing: tuple[float, ...]) -> int:
    """Return the numpy axis with the largest spacing, the first one on ties (axis 0, z, for isotropic images)."""
    return int(np.argmax(np.asarray(spacing)))


def informative_slices(volume: np.ndarray, axis: int, std_fraction: float) -> tuple[list[int], int]:
    """Return the slice indices along `axis` whose std is at least std_fraction x the volume's range, and the skip count."""
    finite = np.isfinite(volume)
    if not finite.any():
        return [], volume.shape[axis]
    value_range = float(volume[finite].max() - volume[finite].min())
    moved = np.moveaxis(np.where(finite, volume, 0.0), axis, 0)  # S x H x W
    stds = moved.reshape(moved.shape[0], -1).std(axis=1)
    threshold = std_fraction * value_range
    keep = [int(index) for index in np.nonzero((stds > threshold) & (stds > 0))[0]]
    return keep, moved.shape[0] - len(keep)


class SliceIndex:
    """The kept 2D slices of all volumes, as (volume, axis, slice) triples, with a small cache of volumes.

    Building the index reads every volume once to find blank slices. Afterwards each slice is
    read on access: the volume is loaded and kept in a least-recently-used cache of
    `cache_volumes` entries, so slices of a recently read volume cost no disk access.

    NOTE: the data order is random over all slices, so with many more volumes than cache entries
    almost every slice costs a full volume read and decompression. For large collections, use
    more loader workers or store the volumes uncompressed (.nii).
    """

    def __init__(
        self,
        inputs: Iterable[str | os.PathLike],
        slice_axis: int | None = None,
        blank_std_fraction: float = 0.01,
        cache_volumes: int = 8,
    ):
        self.slice_axis = slice_axis
        self.blank_std_fraction = blank_std_fraction
        self.cache_volumes = cache_volumes
        self.volumes: list[VolumeSource] = []
        self.axes: list[int] = []
        self.shapes: list[tuple[int, ...]] = []
        self.entries: list[tuple[int, int]] = []  # (volume number, slice number)
        self.files: list[dict] = []
        self._cache: OrderedDict[str, list[np.ndarray]] = OrderedDict()

        for path in find_nifti_files(inputs):
            self._add_file(path)
        if not self.entries:
            raise ValueError(
                f"All {self.skipped_slices} slices of {len(self.files)} files are blank or near-constant "
                f"(std below {blank_std_fraction} x the volume's intensity range). Check the data or lower blank_std_fraction."
            )
        logger.info(
            "Pre-training data: %d slices from %d volumes in %d files; %d blank or near-constant slices skipped.",
            len(self.entries), len(self.volumes), len(self.files), self.skipped_slices,
        )

    def _add_file(self, path: Path) -> None:
        file_record = {"path": str(path), "volumes": []}
        for source, volume, spacing in read_volumes(path):
            axis = self.slice_axis if self.slice_axis is not None else acquisition_axis(spacing)
            keep, skipped = informative_slices(volume, axis, self.blank_std_fraction)
            number = len(self.volumes)
            self.volumes.append(source)
            self.axes.append(axis)
            self.shapes.append(volume.shape)
            self.entries.extend((number, index) for index in keep)
            file_record["volumes"].append({
                "channel": source.channel, "shape": list(volume.shape), "spacing": list(spacing),
                "slice_axis": axis, "slices_used": len(keep), "slices_skipped": skipped,
            })
        self.files.append(file_record)

    @property
    def skipped_slices(self) -> int:
        return sum(volume["slices_skipped"] for record in self.files for volume in record["volumes"])

    def __len__(self) -> int:
        return len(self.entries)

    def slice_position(self, index: int) -> float:
        """Return where slice `index` lies in its volume, from 0 (first slice) to 1 (last slice)."""
        number, slice_number = self.entries[index]
        length = self.shapes[number][self.axes[number]]
        return slice_number / max(1, length - 1)

    def volume_of(self, index: int) -> VolumeSource:
        return self.volumes[self.entries[index][0]]

    def __getitem__(self, index: int) -> np.ndarray:
        """Return slice `index` as a float32 H x W array with non-finite voxels set to the slice minimum."""
        number, slice_number = self.entries[index]
        source = self.volumes[number]
        volume = self._load(source)
        image = np.take(volume, slice_number, axis=self.axes[number]).astype(np.float32)
        finite = np.isfinite(image)
        if not finite.all():
            image = np.where(finite, image, image[finite].min() if finite.any() else 0.0)
        return image

    def _load(self, source: VolumeSource) -> np.ndarray:
        cached = self._cache.get(source.path)
        if cached is None:
            cached = [volume for _, volume, _ in read_volumes(Path(source.path))]
            self._cache[source.path] = cached
            while len(self._cache) > self.cache_volumes:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(source.path)
        return cached[source.channel or 0]

    def __getstate__(self) -> dict:
        # DataLoader workers get the index without the parent's cache.
        state = dict(self.__dict__)
        state["_cache"] = OrderedDict()
        return state

    def manifest(self) -> dict:
        """Return the manifest: files, slices used and skipped per volume, and the settings that chose them."""
        return {
            "slice_axis": "largest spacing" if self.slice_axis is None else self.slice_axis,
            "blank_std_fraction": self.blank_std_fraction,
            "slices_used": len(self.entries),
            "slices_skipped": self.skipped_slices,
            "files": self.files,
        }


def manifest_sha256(manifest: dict) -> str:
    """Return the sha256 of the manifest's canonical JSON (sorted keys, no whitespace), without its own hash."""
    content = {key: value for key, value in manifest.items() if key != "sha256"}
    text = json.dumps(content, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def write_manifest(manifest: dict, out_dir: Path) -> tuple[Path, str]:
    """Write the manifest with its sha256 to out_dir/data_manifest.json atomically; return the path and hash."""
    digest = manifest_sha256(manifest)
    path = out_dir / MANIFEST_NAME
    atomic_write_text(path, json.dumps({**manifest, "sha256": digest}, indent=1))
    return path, digest
