"""Few-shot datasets: a new nnU-Net raw dataset in which only a few slices of a few volumes are labelled.

The protocol is the data-restricted setting used to evaluate MRI-CORE: K training volumes and V
validation volumes, each with M annotated slices, drawn at random for each repeat. Every other voxel
of those volumes carries nnU-Net's ignore label, so it adds no loss. The source training cases that
were not drawn become the test set, with their full labels.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import SimpleITK as sitk

from mricore_nnunet import validation
from mricore_nnunet.validation import Problem, ValidationError

logger = logging.getLogger(__name__)

# nnU-Net addresses datasets by a three-digit id.
MAX_DATASET_ID = 999
DEFAULT_ID_OFFSET = 500
DRAW_FILE = "fewshot_draw.json"
SPLITS_FILE = "splits_final.json"

_DATASET_NAME = re.compile(r"^Dataset(\d{3})_(.+)$")


@dataclass
class FewShotDataset:
    """The derived dataset: its folder, the drawn cases and the annotated slice indices."""

    dataset_dir: Path
    dataset_name: str
    training_cases: list[str]
    validation_cases: list[str]
    test_cases: list[str]
    # Case -> sorted indices of the annotated slices along `axis`.
    annotated_slices: dict[str, list[int]]
    # Numpy axis of the label arrays in SimpleITK's (z, y, x) order.
    axis: int
    ignore_label: int | None


def annotated_slices(seg: np.ndarray, ignore_label: int, axis: int) -> np.ndarray:
    """Return the sorted indices along `axis` of the slices that contain any voxel other than `ignore_label`."""
    if not -seg.ndim <= axis < seg.ndim:
        raise ValueError(f"Slice axis {axis} is out of range for a segmentation with {seg.ndim} dimensions. "
                         f"Give an axis from 0 to {seg.ndim - 1}.")
    other_axes = tuple(i for i in range(seg.ndim) if i != axis % seg.ndim)
    return np.flatnonzero(np.any(seg != ignore_label, axis=other_axes))


def acquisition_axis(spacing_zyx: Sequence[float]) -> int:
    """Return the numpy axis (z, y, x order) of largest spacing; ties go to the first axis, as in nnU-Net.

    nnU-Net 2.8.1's ExperimentPlanner.determine_transpose slices its 2D configuration along the
    np.argmax of the target spacing, and np.argmax returns the first of equal values.
    """
    return int(np.argmax(np.asarray(spacing_zyx, dtype=float)))


def fewshot_dataset_name(source_name: str, output_id: int, num_volumes: int, slices_per_volume: int | None,
                         seed: int) -> str:
    """Return DatasetNNN_<SourceName>K<K>M<M>S<S> for a source folder name DatasetXXX_<SourceName>."""
    match = _DATASET_NAME.match(source_name)
    base = match.group(2) if match else source_name
    slices = "all" if slices_per_volume is None else slices_per_volume
    return f"Dataset{output_id:03d}_{base}K{num_volumes}M{slices}S{seed}"


def create_fewshot_dataset(dataset: str | int, num_volumes: int, *, seed: int, slices_per_volume: int | None = 1,
                           num_validation_volumes: int | None = None, output_id: int | None = None,
                           slice_axis: str | int = "auto", overwrite: bool = False,
                           raw_dir: str | os.PathLike | None = None) -> FewShotDataset:
    """Derive a few-shot nnU-Net raw dataset from a raw dataset and return what was drawn.

    `dataset` is an id or a DatasetXXX_Name folder in `raw_dir` (default: $nnUNet_raw). The source
    is checked first and only read. K = `num_volumes` training and V = `num_validation_volumes`
    (default K) validation volumes are drawn with numpy.random.default_rng(seed) from the sorted case
    ids. In each, M = `slices_per_volume` slices along `slice_axis` are drawn among the slices with
    foreground, and all other voxels get the ignore label. With `slices_per_volume=None` the drawn
    volumes keep their full labels and no ignore label is added. The new folder is built under a temporary
    name and renamed when complete, so a killed run leaves no half-written dataset behind.
    """
    raw_root = _raw_root(raw_dir)
    source_dir = _resolve_source(raw_root, dataset)
    num_validation_volumes = num_volumes if num_validation_volumes is None else num_validation_volumes

    summary = validation.check_raw_dataset(source_dir, num_folds=None)
    dataset_json = validation.load_dataset_json(source_dir)
    full_labels = slices_per_volume is None
    validation.check_fewshot_request(source_dir, len(summary.case_ids), num_volumes, num_validation_volumes,
                                     1 if full_labels else slices_per_volume, seed)
    validation.check_volume_sizes(summary.image_sizes, source_dir)
    case_files = _source_case_files(source_dir, dataset_json)

    axis = _resolve_axis(slice_axis, summary.spacings)
    source_ignore = dataset_json["labels"].get("ignore")
    ignore_label = int(source_ignore) if source_ignore is not None else _highest_label(dataset_json["labels"]) + 1

    source_id = int(_DATASET_NAME.match(source_dir.name).group(1))
    output_id = source_id + DEFAULT_ID_OFFSET if output_id is None else output_id
    output_name = fewshot_dataset_name(source_dir.name, output_id, num_volumes, slices_per_volume, seed)
    output_dir = raw_root / output_name
    _check_output(raw_root, output_dir, output_id, source_id, overwrite)

    rng = np.random.default_rng(seed)
    case_ids = sorted(summary.case_ids)
    order = rng.permutation(len(case_ids))
    training = [case_ids[i] for i in order[:num_volumes]]
    validation_cases = [case_ids[i] for i in order[num_volumes:num_volumes + num_validation_volumes]]
    test = sorted(case_ids[i] for i in order[num_volumes + num_validation_volumes:])

    labels = {case: _read_label(case_files[case][1]) for case in training + validation_cases}
    if full_labels:
        slices = {case: list(range(label.GetSize()[::-1][axis])) for case, label in labels.items()}
        ignore_label = source_ignore
    else:
        slices = _draw_slices(rng, labels, {case: case_files[case][1] for case in labels}, axis, slices_per_volume,
                              source_ignore)
    if str(slice_axis) == "auto":
        _warn_about_other_axes(summary.spacings, labels, axis)

    draw = {
        "source_dataset": source_dir.name,
        "source_dir": str(source_dir),
        "output_dataset": output_name,
        "seed": seed,
        "num_volumes": num_volumes,
        "slices_per_volume": slices_per_volume,
        "num_validation_volumes": num_validation_volumes,
        "slice_axis": axis,
        "slice_axis_order": "numpy axis of the SimpleITK array, order (z, y, x)",
        "ignore_label": ignore_label,
        "training_cases": training,
        "validation_cases": validation_cases,
        "test_cases": test,
        "annotated_slices": {case: slices[case] for case in training + validation_cases},
        "source_label_sha256": {case: _sha256(case_files[case][1]) for case in case_ids},
    }
    new_json = _derived_dataset_json(dataset_json, ignore_label, len(training) + len(validation_cases), draw)
    splits = [{"train": sorted(training), "val": sorted(validation_cases)}]

    _write_dataset(raw_root, output_dir, overwrite, case_files, labels, slices, axis, ignore_label,
                   training + validation_cases, test, dataset_json["file_ending"], new_json, splits, draw)

    logger.info("Wrote %s: %d training and %d validation volumes with %s annotated slice(s) each along axis %d "
                "(ignore label %s), and %d test cases with full labels in imagesTs and labelsTs",
                output_dir, len(training), len(validation_cases), slices_per_volume, axis, ignore_label, len(test))
    logger.info("%s contains one fold (train: the %d training volumes, val: the %d validation volumes). nnU-Net "
                "2.8.1's ExperimentPlanner copies it to $nnUNet_preprocessed/%s when the dataset is planned, and "
                "training uses it for fold 0.", output_dir / SPLITS_FILE, len(training), len(validation_cases),
                output_name)
    if (source_dir / "imagesTs").is_dir():
        logger.info("The source's own imagesTs is not copied, so the test set consists of the %d training cases "
                    "that were not drawn", len(test))
    _warn_about_stale_preprocessed(output_name)
    return FewShotDataset(dataset_dir=output_dir, dataset_name=output_name, training_cases=training,
                          validation_cases=validation_cases, test_cases=test, annotated_slices=slices, axis=axis,
                          ignore_label=ignore_label)


def _raw_root(raw_dir: str | os.PathLike | None) -> Path:
    if raw_dir is not None:
        return Path(raw_dir)
    value = os.environ.get("nnUNet_raw")
    if value is None:
        raise RuntimeError("The environment variable nnUNet_raw is not set, so the source dataset cannot be found. "
                           "Run 'mricore_nnunet env' to print the lines to add to your shell.")
    return Path(value)


def _resolve_source(raw_root: Path, dataset: str | int) -> Path:
    text = str(dataset)
    if _DATASET_NAME.match(text):
        return raw_root / text
    if not text.isdigit():
        raise ValueError(f"Invalid dataset {text!r}: give a dataset id such as 4 or a folder name such as "
                         f"Dataset004_Hippocampus.")
    matches = sorted(raw_root.glob(f"Dataset{int(text):03d}_*")) if raw_root.is_dir() else []
    matches = [path for path in matches if path.is_dir()]
    if len(matches) != 1:
        found = ", ".join(path.name for path in matches) or "none"
        raise FileNotFoundError(f"Expected one folder Dataset{int(text):03d}_* in {raw_root} for dataset id {text}, "
                                f"found {found}. Give the folder name with -d, or check $nnUNet_raw.")
    return matches[0]


def _source_case_files(source_dir: Path, dataset_json: dict) -> dict[str, tuple[list[str], str]]:
    """Return case -> (channel files, label file) of the source training cases."""
    if "dataset" in dataset_json:
        from mricore_nnunet.validation.files import cases_from_dataset_key

        pairs, _ = cases_from_dataset_key(dataset_json, source_dir, len(dataset_json["channel_names"]))
        return pairs
    ending = dataset_json["file_ending"]
    images = validation.find_cases(source_dir / "imagesTr", dataset_json["channel_names"], ending)
    return {case: (files, str(source_dir / "labelsTr" / f"{case}{ending}")) for case, files in images.items()}


def _resolve_axis(slice_axis: str | int, spacings: dict[str, tuple[float, ...]]) -> int:
    if str(slice_axis) == "auto":
        # SimpleITK spacing is in (x, y, z) order, but the arrays are (z, y, x).
        median = np.median(np.array([spacing[::-1] for spacing in spacings.values()], dtype=float), axis=0)
        return acquisition_axis(median)
    if str(slice_axis) not in ("0", "1", "2"):
        raise ValueError(f"Invalid slice axis {slice_axis!r}: give auto or a numpy axis 0, 1 or 2 in (z, y, x) "
                         f"order.")
    return int(slice_axis)


def _highest_label(labels: dict) -> int:
    values = []
    for name, value in labels.items():
        members = value if isinstance(value, (list, tuple)) else [value]
        values.extend(int(member) for member in members)
    return max(values)


def _check_output(raw_root: Path, output_dir: Path, output_id: int, source_id: int, overwrite: bool) -> None:
    """Raise ValidationError when the output id or folder would clash with an existing dataset."""
    problems = []
    if not 1 <= output_id <= MAX_DATASET_ID or output_id == source_id:
        problems.append(Problem(
            str(output_dir), f"output dataset id {output_id}",
            f"an id from 1 to {MAX_DATASET_ID} other than the source id {source_id}",
            "Choose a free dataset id with --output-id."))
    elif output_dir.exists() and not overwrite:
        problems.append(Problem(str(output_dir), "an existing folder", "no folder of that name",
                                "Pass --overwrite to replace it, or choose another id with --output-id."))
    if not problems:
        # nnU-Net resolves an id to a name across all three folders and fails when it finds two names.
        for variable in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
            folder = raw_root if variable == "nnUNet_raw" else os.environ.get(variable)
            if folder is None or not Path(folder).is_dir():
                continue
            for other in sorted(Path(folder).glob(f"Dataset{output_id:03d}_*")):
                if other.name != output_dir.name:
                    problems.append(Problem(
                        str(other), f"another dataset with id {output_id}", f"{output_dir.name} as the only "
                        f"dataset with id {output_id}, because nnU-Net finds datasets by id",
                        "Choose a free dataset id with --output-id, or remove the other dataset."))
    if problems:
        raise ValidationError(problems, "Cannot write the few-shot dataset")


def _read_label(path: str) -> sitk.Image:
    return sitk.ReadImage(str(path))


def _draw_slices(rng: np.random.Generator, labels: dict[str, sitk.Image], label_files: dict[str, str], axis: int,
                 slices_per_volume: int, source_ignore: int | None) -> dict[str, list[int]]:
    """Draw M slice indices per case among its foreground slices, or among all slices when it has none."""
    candidates = {}
    counts = {}
    for case, image in labels.items():
        array = sitk.GetArrayViewFromImage(image)
        foreground = array != 0
        if source_ignore is not None:
            foreground &= array != source_ignore
        other_axes = tuple(i for i in range(array.ndim) if i != axis)
        foreground_slices = np.flatnonzero(np.any(foreground, axis=other_axes))
        counts[case] = (len(foreground_slices), array.shape[axis])
        candidates[case] = foreground_slices
    validation.check_slice_counts(counts, label_files, slices_per_volume, axis)

    slices = {}
    for case, foreground_slices in candidates.items():
        if len(foreground_slices) == 0:
            logger.warning("Case %s has no foreground, so its %d annotated slice(s) are drawn among all %d slices "
                           "along axis %d", case, slices_per_volume, counts[case][1], axis)
            foreground_slices = np.arange(counts[case][1])
        chosen = rng.choice(foreground_slices, size=slices_per_volume, replace=False)
        slices[case] = sorted(int(index) for index in chosen)
    return slices


def _warn_about_other_axes(spacings: dict[str, tuple[float, ...]], labels: dict[str, sitk.Image], axis: int) -> None:
    """Warn about drawn cases whose own largest spacing lies along another axis than the dataset's median."""
    others = [f"{case} (axis {acquisition_axis(spacings[case][::-1])})" for case in labels
              if acquisition_axis(spacings[case][::-1]) != axis]
    if others:
        logger.warning("Slices are drawn along axis %d, the largest median spacing, but these cases have their "
                       "largest spacing along another axis: %s. Pass --slice-axis to choose the axis.",
                       axis, ", ".join(others))


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _derived_dataset_json(source_json: dict, ignore_label: int | None, num_training: int, draw: dict) -> dict:
    result = {key: value for key, value in source_json.items() if key != "dataset"}
    result["labels"] = {name: value for name, value in source_json["labels"].items() if name != "ignore"}
    result["numTraining"] = num_training
    result["name"] = draw["output_dataset"]
    if draw["slices_per_volume"] is None:
        if ignore_label is not None:
            result["labels"]["ignore"] = ignore_label
        result["description"] = (
            f"Subset of {draw['source_dataset']}: {draw['num_volumes']} training and {draw['num_validation_volumes']} "
            f"validation volumes with full labels (seed {draw['seed']}). imagesTs and labelsTs contain the other "
            f"training cases.")
        return result
    result["labels"]["ignore"] = ignore_label
    result["description"] = (
        f"Few-shot subset of {draw['source_dataset']}: {draw['num_volumes']} training and "
        f"{draw['num_validation_volumes']} validation volumes with {draw['slices_per_volume']} annotated slice(s) "
        f"each along axis {draw['slice_axis']} (seed {draw['seed']}); all other voxels carry the ignore label "
        f"{ignore_label}. imagesTs and labelsTs contain the other training cases with full labels.")
    return result


def _sparse_label(image: sitk.Image, slices: list[int], axis: int, ignore_label: int) -> sitk.Image:
    """Return a copy of the label with every voxel outside `slices` set to the ignore label."""
    array = sitk.GetArrayFromImage(image)
    dtype = array.dtype
    if np.issubdtype(dtype, np.integer) and ignore_label > np.iinfo(dtype).max:
        dtype = np.promote_types(dtype, np.min_scalar_type(ignore_label))
    sparse = np.full(array.shape, ignore_label, dtype=dtype)
    index = [slice(None)] * array.ndim
    index[axis] = slices
    sparse[tuple(index)] = array[tuple(index)]
    result = sitk.GetImageFromArray(sparse)
    result.CopyInformation(image)
    return result


def _write_dataset(raw_root: Path, output_dir: Path, overwrite: bool, case_files: dict[str, tuple[list[str], str]],
                   labels: dict[str, sitk.Image], slices: dict[str, list[int]], axis: int, ignore_label: int | None,
                   annotated_cases: list[str], test_cases: list[str], file_ending: str, dataset_json: dict,
                   splits: list[dict], draw: dict) -> None:
    # The dot keeps the temporary folder out of nnU-Net's search for Dataset<id>_ folders.
    temporary = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.", dir=raw_root))
    try:
        for folder in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
            (temporary / folder).mkdir()
        for case in annotated_cases:
            _copy_images(case, case_files[case][0], temporary / "imagesTr", file_ending)
            if ignore_label is None:
                shutil.copyfile(case_files[case][1], temporary / "labelsTr" / f"{case}{file_ending}")
            else:
                label = _sparse_label(labels[case], slices[case], axis, ignore_label)
                sitk.WriteImage(label, str(temporary / "labelsTr" / f"{case}{file_ending}"), True)
        for case in test_cases:
            _copy_images(case, case_files[case][0], temporary / "imagesTs", file_ending)
            shutil.copyfile(case_files[case][1], temporary / "labelsTs" / f"{case}{file_ending}")
        for name, content in (("dataset.json", dataset_json), (SPLITS_FILE, splits), (DRAW_FILE, draw)):
            (temporary / name).write_text(json.dumps(content, indent=2) + "\n", encoding="utf-8")
        if output_dir.exists() and overwrite:
            logger.info("Replacing the existing %s (--overwrite)", output_dir)
            shutil.rmtree(output_dir)
        os.replace(temporary, output_dir)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise


def _copy_images(case: str, files: list[str], folder: Path, file_ending: str) -> None:
    for channel, source in enumerate(files):
        shutil.copyfile(source, folder / f"{case}_{channel:04d}{file_ending}")


def _warn_about_stale_preprocessed(output_name: str) -> None:
    preprocessed = os.environ.get("nnUNet_preprocessed")
    if preprocessed is None:
        return
    stale = Path(preprocessed) / output_name
    if stale.exists():
        logger.warning("%s exists from an earlier run. Delete it before planning, because nnU-Net keeps an existing "
                       "splits_final.json there and stops when its training cases differ from the new draw.", stale)
