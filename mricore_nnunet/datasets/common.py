"""Shared steps of the dataset converters: finding and pairing files, remapping labels, writing cases.

Every converter ends in `convert_pairs`, which writes an nnU-Net v2 raw dataset
`DatasetNNN_Name/{imagesTr,labelsTr,dataset.json}` into the `nnUNet_raw` folder. The dataset is first
written to a hidden `.DatasetNNN_Name.partial` folder and renamed when every case is written, so a
failed conversion leaves no half-written dataset behind.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import SimpleITK as sitk

# Geometry differences within the validator's tolerances are rounding. Larger ones are logged before the
# label takes the image's geometry.
from mricore_nnunet.validation.images import DIRECTION_ATOL, ORIGIN_ATOL_MM, SPACING_RTOL

logger = logging.getLogger(__name__)

FILE_ENDING = ".nii.gz"

# Endings of the image formats that SimpleITK reads and that the supported releases use.
IMAGE_ENDINGS = (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd", ".nhdr")

_DATASET_FOLDER = re.compile(r"^Dataset(\d{3})_")
_UNSAFE_CASE_CHARACTERS = re.compile(r"[^A-Za-z0-9-]+")


class ReleaseLayoutError(FileNotFoundError):
    """A file or folder that the converter expects in the downloaded release is missing."""


class ConversionError(ValueError):
    """The release contains a file whose content the converter cannot convert (size, label values)."""


@dataclass(frozen=True)
class CasePair:
    """One training case: its output case id, its image file (or DICOM folder) and its label file."""

    case_id: str
    image: Path
    label: Path


@dataclass(frozen=True)
class LabelMap:
    """Mapping from label values of the release to label values of the task.

    `mapping` sends release values to task values. Release values that it does not list become
    `unlisted_value` (0 cuts one organ out of a multi-organ map, 1 merges all foreground into one
    class). With `unlisted_value` None they make the conversion fail, because an unexpected value
    usually means that the release uses another label convention than the converter assumes.
    """

    mapping: Mapping[int, int]
    unlisted_value: int | None = None

    @classmethod
    def identity(cls, values: Iterable[int]) -> "LabelMap":
        """Keep the listed values and reject all others."""
        return cls({int(value): int(value) for value in values})

    @classmethod
    def binary(cls, foreground_values: Iterable[int], unlisted_value: int | None = 0) -> "LabelMap":
        """Map every listed release value to 1 and 0 to 0; other values become `unlisted_value`."""
        mapping = {0: 0}
        mapping.update({int(value): 1 for value in foreground_values})
        return cls(mapping, unlisted_value)

    @classmethod
    def any_foreground(cls) -> "LabelMap":
        """Map 0 to 0 and every other integer value to 1."""
        return cls({0: 0}, unlisted_value=1)

    def target(self, value: int) -> int | None:
        return self.mapping.get(value, self.unlisted_value)

    def target_values(self) -> set[int]:
        values = set(self.mapping.values())
        if self.unlisted_value is not None:
            values.add(self.unlisted_value)
        return values


@dataclass(frozen=True)
class TaskMetadata:
    """The dataset.json fields of a task that do not depend on the converted cases."""

    name: str
    channel_names: Mapping[str, str]
    labels: Mapping[str, int]
    description: str
    reference: str
    licence: str
    release: str
    extra: Mapping[str, object] = field(default_factory=dict)


def sanitise_case_id(name: str) -> str:
    """Return `name` with every run of characters other than letters, digits and '-' replaced by '_'.

    nnU-Net reads the channel from the last '_XXXX' before the file ending, and dots or spaces in case
    ids break file-ending detection and shell commands, so only these characters are kept.
    """
    cleaned = _UNSAFE_CASE_CHARACTERS.sub("_", name).strip("_")
    if not cleaned:
        raise ConversionError(f"Case name {name!r} contains no letters or digits, so no case id can be made "
                              f"from it. Rename the file in the release copy.")
    return cleaned


def strip_image_ending(file_name: str) -> str:
    """Return the file name without its image ending (.nii.gz, .nii, .mha, .mhd, .nrrd, .nhdr)."""
    lowered = file_name.lower()
    for ending in IMAGE_ENDINGS:
        if lowered.endswith(ending):
            return file_name[: -len(ending)]
    return file_name


def is_image_file(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(IMAGE_ENDINGS) and not path.name.startswith(".")


def require_folder(path: Path, description: str, release: str) -> Path:
    """Return `path` when it is a folder, else raise ReleaseLayoutError naming what was expected there."""
    if not path.is_dir():
        raise ReleaseLayoutError(
            f"Missing folder {path} in the {release} release: expected {description}. Check that SOURCE_DIR "
            f"is the extracted release folder described in the converter's documentation.")
    return path


def index_image_files(folder: Path, recursive: bool = False, dicom_folders: bool = False) -> dict[str, Path]:
    """Return {file name without image ending: path} for the image files in `folder`.

    With `dicom_folders`, each subfolder of `folder` is also a case, keyed by the subfolder name, whose
    image is the DICOM series inside it (see read_image). Raises ConversionError when two entries share
    a key (for example a.nii and a.nii.gz), because then it is unclear which one belongs to the case.
    """
    candidates = folder.rglob("*") if recursive else folder.iterdir()
    index: dict[str, Path] = {}
    duplicates: list[str] = []
    for path in sorted(candidates):
        if dicom_folders and path.is_dir() and path.parent == folder:
            key = path.name
            if key in index:
                duplicates.append(f"{index[key]} and {path}")
            index[key] = path
            continue
        if not is_image_file(path):
            continue
        key = strip_image_ending(path.name)
        if key in index:
            duplicates.append(f"{index[key]} and {path}")
        index[key] = path
    if duplicates:
        raise ConversionError(f"Several image files share one case name in {folder}: {'; '.join(duplicates)}. "
                              f"Keep one file per case.")
    return index


def pair_by_name(images: Mapping[str, Path], labels: Mapping[str, Path], release: str,
                 require_label: bool = True) -> list[tuple[str, Path, Path]]:
    """Pair image and label files that share a key, and return (key, image, label) sorted by key.

    Raises ReleaseLayoutError listing images without a label (unless `require_label` is False, when
    such images are skipped with a log message) and labels without an image.
    """
    missing_labels = sorted(set(images) - set(labels))
    missing_images = sorted(set(labels) - set(images))
    problems = []
    if missing_labels and require_label:
        problems.append("no label file for image(s) " + ", ".join(str(images[key]) for key in missing_labels))
    if missing_images:
        problems.append("no image file for label(s) " + ", ".join(str(labels[key]) for key in missing_images))
    if problems:
        raise ReleaseLayoutError(
            f"Unpaired files in the {release} release: " + "; ".join(problems) +
            ". Each case needs one image and one label with matching names: add the missing files or remove "
            "the unpaired ones from the copy you convert.")
    if missing_labels:
        logger.info("Skipping %d image(s) without a label in the %s release: %s", len(missing_labels), release,
                    ", ".join(missing_labels))
    return [(key, images[key], labels[key]) for key in sorted(set(images) & set(labels))]


def make_case_pairs(triples: Iterable[tuple[str, Path, Path]], prefix: str = "") -> list[CasePair]:
    """Turn (name, image, label) triples into CasePairs with sanitised, unique case ids."""
    pairs: list[CasePair] = []
    seen: dict[str, str] = {}
    for name, image, label in triples:
        case_id = sanitise_case_id(f"{prefix}{name}")
        if case_id in seen:
            raise ConversionError(f"Case names {seen[case_id]!r} and {name!r} both become case id {case_id!r} "
                                  f"after replacing characters nnU-Net cannot use. Rename one of them.")
        seen[case_id] = name
        pairs.append(CasePair(case_id, Path(image), Path(label)))
    return pairs


def read_image(path: Path) -> sitk.Image:
    """Read an image file, or a folder holding one DICOM series, with SimpleITK."""
    if path.is_dir():
        return _read_dicom_series(path)
    try:
        return sitk.ReadImage(str(path))
    except RuntimeError as error:
        raise ConversionError(f"Failed to read {path}: {error}. Check that the download is complete "
                              f"(compare the file size with the release's listing).") from error


def _read_dicom_series(folder: Path) -> sitk.Image:
    """Read the one DICOM series found in `folder` or its subfolders (TCIA downloads nest study folders)."""
    reader = sitk.ImageSeriesReader()
    series: list[tuple[Path, str]] = []
    for directory in sorted([folder, *(path for path in folder.rglob("*") if path.is_dir())]):
        series.extend((directory, series_id) for series_id in reader.GetGDCMSeriesIDs(str(directory)))
    if len(series) != 1:
        found = ", ".join(f"{directory} ({series_id})" for directory, series_id in series) or "none"
        raise ConversionError(f"DICOM folder {folder} contains {len(series)} series; expected exactly 1 "
                              f"(found: {found}). Keep only the series to segment in the case folder, or "
                              f"convert it to NIfTI first.")
    directory, series_id = series[0]
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(directory), series_id))
    try:
        return reader.Execute()
    except RuntimeError as error:
        raise ConversionError(f"Failed to read the DICOM series in {directory}: {error}") from error


def cast_image(image: sitk.Image, path: Path) -> sitk.Image:
    """Return the image as a scalar 2D or 3D volume with float64 cast to float32.

    Raises ConversionError for vector images and for images of another dimension.
    """
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise ConversionError(f"{path} has {image.GetNumberOfComponentsPerPixel()} components per voxel; "
                              f"expected a scalar MRI volume. Export one scalar image per sequence.")
    if image.GetDimension() not in (2, 3):
        raise ConversionError(f"{path} is a {image.GetDimension()}D image of size {image.GetSize()}; expected "
                              f"a 2D or 3D volume. Split the series into 3D volumes first.")
    if image.GetPixelID() == sitk.sitkFloat64:
        # nnU-Net reads images as float32 anyway, and float64 doubles the file size.
        return sitk.Cast(image, sitk.sitkFloat32)
    return image


def remap_labels(label: sitk.Image, label_map: LabelMap, path: Path) -> sitk.Image:
    """Return `label` with its values replaced through `label_map`, as uint8 (or uint16 above 255).

    Raises ConversionError for non-integer values and, when the map has no `unlisted_value`, for
    values the map does not list.
    """
    if label.GetNumberOfComponentsPerPixel() != 1:
        raise ConversionError(f"Label {path} has {label.GetNumberOfComponentsPerPixel()} components per voxel; "
                              f"expected a scalar label map.")
    array = sitk.GetArrayViewFromImage(label)
    values = np.unique(array)
    non_integer = [value for value in values.tolist() if not float(value).is_integer()]
    if non_integer:
        raise ConversionError(f"Label {path} contains non-integer values {non_integer[:5]}; expected integer "
                              f"label values. Check that this file is a label map and not an image.")

    unlisted = [int(value) for value in values if label_map.target(int(value)) is None]
    if unlisted:
        raise ConversionError(
            f"Label {path} contains value(s) {unlisted} that the converter does not expect; expected only "
            f"{sorted(label_map.mapping)}. The release may use another label convention than the one this "
            f"converter documents: check the release's documentation before converting.")

    output = np.zeros(array.shape, dtype=np.uint8 if max(label_map.target_values()) <= 255 else np.uint16)
    for value in values.tolist():
        target = label_map.target(int(value))
        if target:
            output[array == value] = target
    remapped = sitk.GetImageFromArray(output)
    remapped.CopyInformation(label)
    return remapped


def geometry_differences(image: sitk.Image, label: sitk.Image) -> list[str]:
    """Return readable descriptions of the spacing, origin and direction differences beyond tolerance."""
    differences = []
    if not np.allclose(label.GetSpacing(), image.GetSpacing(), rtol=SPACING_RTOL, atol=0):
        differences.append(f"spacing {label.GetSpacing()} vs {image.GetSpacing()}")
    if not np.allclose(label.GetOrigin(), image.GetOrigin(), rtol=0, atol=ORIGIN_ATOL_MM):
        differences.append(f"origin {label.GetOrigin()} vs {image.GetOrigin()}")
    if not np.allclose(label.GetDirection(), image.GetDirection(), rtol=0, atol=DIRECTION_ATOL):
        differences.append(f"direction {label.GetDirection()} vs {image.GetDirection()}")
    return differences


def write_case(pair: CasePair, dataset_dir: Path, label_map: LabelMap) -> set[int]:
    """Convert one case into imagesTr/<case>_0000.nii.gz and labelsTr/<case>.nii.gz.

    The label takes the image's spacing, origin and direction after its size has been checked,
    because releases often store label headers with rounded or missing geometry. Geometry differences
    beyond rounding are logged, since they can also mean that the label belongs to another scan.
    Returns the label values written.
    """
    image = cast_image(read_image(pair.image), pair.image)
    label = read_image(pair.label)
    if label.GetDimension() != image.GetDimension() or label.GetSize() != image.GetSize():
        raise ConversionError(
            f"Case {pair.case_id}: label {pair.label} has size {label.GetSize()} but image {pair.image} has size "
            f"{image.GetSize()}. Image and label must share one voxel grid, so check that the label belongs to "
            f"this image (for example the cropped and the full-size scan of one patient).")

    differences = geometry_differences(image, label)
    if differences:
        logger.warning("Case %s: label %s differs from image %s in %s (label vs image); the label takes the "
                       "image's geometry", pair.case_id, pair.label, pair.image, "; ".join(differences))
    label = remap_labels(label, label_map, pair.label)
    label.CopyInformation(image)

    sitk.WriteImage(image, str(dataset_dir / "imagesTr" / f"{pair.case_id}_0000{FILE_ENDING}"), True)
    sitk.WriteImage(label, str(dataset_dir / "labelsTr" / f"{pair.case_id}{FILE_ENDING}"), True)
    return {int(value) for value in np.unique(sitk.GetArrayViewFromImage(label))}


def resolve_dataset_id(dataset_id: int | None, default: int) -> int:
    """Return `dataset_id`, or the task's default id when it is None."""
    return default if dataset_id is None else int(dataset_id)


def dataset_folder_name(dataset_id: int, name: str) -> str:
    if not 1 <= int(dataset_id) <= 999:
        raise ValueError(f"Dataset id {dataset_id} is out of range; nnU-Net dataset ids are 1 to 999.")
    if not re.fullmatch(r"[A-Za-z0-9-]+", name):
        raise ValueError(f"Dataset name {name!r} is invalid; use letters, digits and '-' only.")
    return f"Dataset{int(dataset_id):03d}_{name}"


def _check_output_folder(out_raw: Path, folder_name: str, overwrite: bool) -> Path:
    """Return the final dataset path after checking that writing it replaces nothing unintended."""
    target = out_raw / folder_name
    prefix = folder_name.split("_", 1)[0] + "_"
    clashes = [path.name for path in out_raw.iterdir()
               if path.is_dir() and path.name.startswith(prefix) and path.name != folder_name
               and _DATASET_FOLDER.match(path.name)] if out_raw.is_dir() else []
    if clashes:
        raise FileExistsError(
            f"{out_raw} already contains {', '.join(sorted(clashes))} with the id of {folder_name}; nnU-Net "
            f"needs unique dataset ids. Pass another dataset id (--dataset-id).")
    if target.exists() and not overwrite:
        raise FileExistsError(f"Output dataset {target} already exists. Remove it, choose another dataset id, "
                              f"or pass overwrite=True (--overwrite) to replace it.")
    return target


def build_dataset_json(metadata: TaskMetadata, num_training: int, label_values_found: set[int]) -> dict:
    declared = set(metadata.labels.values())
    undeclared = sorted(label_values_found - declared)
    if undeclared:
        # The label maps only produce declared values, so this is a programming error in a converter.
        raise RuntimeError(f"Converted labels contain values {undeclared} that {metadata.name}'s labels "
                           f"{dict(metadata.labels)} do not declare.")
    content = {
        "name": metadata.name,
        "description": metadata.description,
        "reference": metadata.reference,
        "licence": metadata.licence,
        "release": metadata.release,
        "channel_names": dict(metadata.channel_names),
        "labels": dict(metadata.labels),
        "numTraining": num_training,
        "file_ending": FILE_ENDING,
    }
    content.update(metadata.extra)
    return content


def write_dataset_json(dataset_dir: Path, content: Mapping[str, object]) -> Path:
    path = dataset_dir / "dataset.json"
    path.write_text(json.dumps(content, indent=4) + "\n", encoding="utf-8")
    return path


def convert_pairs(pairs: Sequence[CasePair], out_raw: str | os.PathLike, dataset_id: int,
                  metadata: TaskMetadata, label_map: LabelMap, *, overwrite: bool = False) -> Path:
    """Write the cases and dataset.json of one task to `out_raw`/DatasetNNN_Name and return that folder.

    Raises FileExistsError when the folder exists (unless `overwrite`) or another dataset has the same
    id, ConversionError when there are no cases, and the errors of `write_case` for invalid cases.
    """
    if not pairs:
        raise ConversionError(f"No cases found for {metadata.name}, so there is nothing to convert. Check "
                              f"SOURCE_DIR and the layout described in the converter's documentation.")
    out_raw = Path(out_raw)
    folder_name = dataset_folder_name(dataset_id, metadata.name)
    target = _check_output_folder(out_raw, folder_name, overwrite)

    partial = out_raw / f".{folder_name}.partial"
    if partial.exists():
        shutil.rmtree(partial)
    (partial / "imagesTr").mkdir(parents=True)
    (partial / "labelsTr").mkdir()
    logger.info("Converting %d cases of %s into %s", len(pairs), metadata.name, target)
    try:
        label_values: set[int] = set()
        for number, pair in enumerate(pairs, start=1):
            label_values |= write_case(pair, partial, label_map)
            logger.debug("Wrote case %s (%d/%d)", pair.case_id, number, len(pairs))
        write_dataset_json(partial, build_dataset_json(metadata, len(pairs), label_values))
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise

    if target.exists():
        shutil.rmtree(target)
    partial.rename(target)
    logger.info("Wrote %s with %d cases", target, len(pairs))
    return target


def convert_paired_folders(images_dir: str | os.PathLike, labels_dir: str | os.PathLike,
                           out_raw: str | os.PathLike, dataset_id: int, name: str,
                           label_map: LabelMap | Mapping[int, int], labels: Mapping[str, int], *,
                           channel_names: Mapping[str, str] | None = None, description: str = "",
                           reference: str = "", licence: str = "check the source", release: str = "",
                           label_suffix: str = "", case_prefix: str = "", recursive: bool = False,
                           dicom_images: bool = False, extra: Mapping[str, object] | None = None,
                           overwrite: bool = False) -> Path:
    """Convert a folder of images and a folder of labels whose file names match into an nnU-Net dataset.

    An image `<name><ending>` pairs with the label `<name><label_suffix><ending>`, where the ending is
    any of IMAGE_ENDINGS and may differ between image and label (for example NIfTI images with NRRD
    labels). With `dicom_images`, a subfolder `<name>/` of `images_dir` holding one DICOM series is
    also an image. `recursive` searches subfolders of both folders for files. `label_map` sends label
    values of the release to the task's values (a plain dict lists every allowed value), and `labels`
    are the task's label names and values for dataset.json. Returns the written dataset folder.
    """
    if not isinstance(label_map, LabelMap):
        label_map = LabelMap(dict(label_map))
    metadata = TaskMetadata(
        name=name, channel_names=channel_names or {"0": "MRI"}, labels=labels, description=description,
        reference=reference, licence=licence, release=release or name, extra=extra or {})
    return convert_folders(images_dir, labels_dir, out_raw, dataset_id, metadata, label_map,
                           label_suffix=label_suffix, case_prefix=case_prefix, recursive=recursive,
                           dicom_images=dicom_images, overwrite=overwrite)


def convert_folders(images_dir: str | os.PathLike, labels_dir: str | os.PathLike, out_raw: str | os.PathLike,
                    dataset_id: int, metadata: TaskMetadata, label_map: LabelMap, *, label_suffix: str = "",
                    case_prefix: str = "", recursive: bool = False, dicom_images: bool = False,
                    overwrite: bool = False) -> Path:
    """Convert paired folders as convert_paired_folders does, for converters that have their TaskMetadata."""
    images_dir, labels_dir = Path(images_dir), Path(labels_dir)
    release = metadata.release
    require_folder(images_dir, "the image files", release)
    require_folder(labels_dir, "the label files", release)
    images = index_image_files(images_dir, recursive and not dicom_images, dicom_folders=dicom_images)
    labels_found = index_image_files(labels_dir, recursive)
    if label_suffix:
        not_suffixed = sorted(key for key in labels_found if not key.endswith(label_suffix))
        if not_suffixed:
            raise ReleaseLayoutError(f"Label file(s) {', '.join(not_suffixed)} in {labels_dir} do not end in "
                                     f"{label_suffix!r}; expected <case>{label_suffix}<ending>.")
        labels_found = {key[: -len(label_suffix)]: path for key, path in labels_found.items()}
    if not images:
        raise ReleaseLayoutError(f"No image files ({', '.join(IMAGE_ENDINGS)}) in {images_dir}; expected one "
                                 f"image per case.")

    triples = pair_by_name(images, labels_found, release)
    return convert_pairs(make_case_pairs(triples, case_prefix), out_raw, dataset_id, metadata, label_map,
                         overwrite=overwrite)
