"""Scoring predictions against reference labels: 3D Dice and normalised surface Dice (NSD) per case and label.

NSD is the fraction of the surface voxels of both masks that lie within a tolerance (in mm) of the
other mask's surface. Surface voxels are mask voxels with a face neighbour outside the mask (the mask
XOR its erosion), and distances come from scipy's Euclidean distance transform with the voxel spacing.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from mricore_nnunet import validation
from mricore_nnunet.atomic import atomic_write_text
from mricore_nnunet.fewshot import acquisition_axis
from mricore_nnunet.validation import Problem, ValidationError

logger = logging.getLogger(__name__)

DEFAULT_NSD_TOLERANCE_MM = 2.0
METRICS = ("dice", "nsd")
IMAGE_ENDINGS = (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd", ".nhdr")


def dice_score(reference: np.ndarray, prediction: np.ndarray, evaluated: np.ndarray | None = None) -> float:
    """Return 2|A∩B| / (|A| + |B|) over the voxels where `evaluated` is True (all voxels without it).

    Both masks empty gives 1.0, because the prediction then agrees with the reference.
    """
    reference, prediction = _restrict(reference, prediction, evaluated)
    total = int(np.count_nonzero(reference)) + int(np.count_nonzero(prediction))
    if total == 0:
        return 1.0
    return 2.0 * int(np.count_nonzero(reference & prediction)) / total


def normalized_surface_dice(reference: np.ndarray, prediction: np.ndarray, spacing: Sequence[float],
                            tolerance_mm: float, evaluated: np.ndarray | None = None) -> float:
    """Return the NSD of two boolean masks at `tolerance_mm`, with `spacing` in mm per array axis.

    Voxels outside `evaluated` are excluded: they belong to neither mask, and they do not make a
    neighbouring mask voxel a surface voxel, because their label is unknown or not scored. Both masks empty
    gives 1.0 and exactly one empty gives 0.0. Returns NaN when both masks are non-empty but have no
    surface voxel, which happens only when excluded voxels enclose them.
    """
    reference, prediction = _restrict(reference, prediction, evaluated)
    reference_empty = not reference.any()
    prediction_empty = not prediction.any()
    if reference_empty and prediction_empty:
        return 1.0
    if reference_empty or prediction_empty:
        return 0.0

    excluded = None if evaluated is None else ~evaluated
    reference_surface = _surface(reference, excluded)
    prediction_surface = _surface(prediction, excluded)
    num_surface = int(np.count_nonzero(reference_surface)) + int(np.count_nonzero(prediction_surface))
    if num_surface == 0:
        return math.nan

    # Every surface voxel lies inside the bounding box of both surfaces, so cropping to it keeps each
    # nearest-surface distance exact and saves time on large volumes.
    box = _bounding_box(reference_surface | prediction_surface)
    reference_surface = reference_surface[box]
    prediction_surface = prediction_surface[box]
    within = (_count_within(prediction_surface, reference_surface, spacing, tolerance_mm)
              + _count_within(reference_surface, prediction_surface, spacing, tolerance_mm))
    return float(within) / num_surface


def foreground_slices(reference: np.ndarray, axis: int, ignore_label: int | None = None) -> np.ndarray:
    """Return the indices along `axis` of the slices where the reference has a label other than 0 and ignore."""
    foreground = reference != 0
    if ignore_label is not None:
        foreground &= reference != ignore_label
    other_axes = tuple(i for i in range(reference.ndim) if i != axis)
    return np.flatnonzero(np.any(foreground, axis=other_axes))


def evaluate_case(reference: np.ndarray, prediction: np.ndarray, spacing: Sequence[float], labels: Sequence[int], *,
                  nsd_tolerance_mm: float = DEFAULT_NSD_TOLERANCE_MM, ignore_label: int | None = None,
                  foreground_slices_only: bool = False, slice_axis: int | None = None) -> dict:
    """Return Dice, NSD and voxel counts per label for one case, plus the evaluated slices.

    `reference` and `prediction` are label arrays on one grid and `spacing` is in mm per array axis.
    Voxels with `ignore_label` in the reference are excluded. With `foreground_slices_only`, only the
    slices along `slice_axis` (default: the axis of largest spacing) where the reference has foreground
    are evaluated. When nothing is left to evaluate, every metric is NaN.
    """
    if reference.shape != prediction.shape:
        raise ValueError(f"Reference shape {reference.shape} differs from prediction shape {prediction.shape}. "
                         f"Both must lie on one voxel grid.")
    evaluated = None if ignore_label is None else reference != ignore_label
    result: dict = {"evaluated_slices": None}
    if foreground_slices_only:
        axis = acquisition_axis(spacing) if slice_axis is None else slice_axis
        slices = foreground_slices(reference, axis, ignore_label)
        in_slices = np.zeros(reference.shape, dtype=bool)
        index = [slice(None)] * reference.ndim
        index[axis] = slices
        in_slices[tuple(index)] = True
        evaluated = in_slices if evaluated is None else evaluated & in_slices
        result["slice_axis"] = axis
        result["evaluated_slices"] = [int(i) for i in slices]
    nothing_evaluated = evaluated is not None and not evaluated.any()

    per_label = {}
    for label in labels:
        reference_mask = reference == label
        prediction_mask = prediction == label
        restricted_reference, restricted_prediction = _restrict(reference_mask, prediction_mask, evaluated)
        entry = {
            "reference_voxels": int(np.count_nonzero(restricted_reference)),
            "prediction_voxels": int(np.count_nonzero(restricted_prediction)),
            "overlap_voxels": int(np.count_nonzero(restricted_reference & restricted_prediction)),
        }
        if nothing_evaluated:
            entry["dice"] = entry["nsd"] = math.nan
        else:
            entry["dice"] = dice_score(reference_mask, prediction_mask, evaluated)
            entry["nsd"] = normalized_surface_dice(reference_mask, prediction_mask, spacing, nsd_tolerance_mm,
                                                   evaluated)
        per_label[str(label)] = entry
    result["labels"] = per_label
    return result


def evaluate_folder(reference_dir: str | os.PathLike, prediction_dir: str | os.PathLike, labels: Sequence[int], *,
                    nsd_tolerance_mm: float = DEFAULT_NSD_TOLERANCE_MM, ignore_label: int | None = None,
                    foreground_slices_only: bool = False, slice_axis: int | None = None,
                    output_file: str | os.PathLike | None = None) -> dict:
    """Score every reference label file against the prediction of the same name and return the summary.

    All predictions are checked first: a missing prediction or one on another voxel grid is an error
    that names the case. The summary contains the settings, one entry per case, and per label the mean
    and population standard deviation over cases, NaN values excluded as in nnU-Net. `foreground_mean`
    averages the per-label means. With `output_file`, the summary is also written there as JSON
    (NaN as null).
    """
    labels = [int(label) for label in labels]
    _check_settings(labels, nsd_tolerance_mm, ignore_label, slice_axis)
    reference_files = _find_label_files(Path(reference_dir))
    pairs = validation.check_prediction_pairs(reference_files, prediction_dir)

    cases = []
    for name, reference_file in sorted(reference_files.items()):
        reference_image = sitk.ReadImage(str(reference_file))
        prediction_image = sitk.ReadImage(str(pairs[name]))
        # SimpleITK spacing is in (x, y, z) order, but the arrays are (z, y, x).
        spacing = tuple(float(s) for s in reference_image.GetSpacing())[::-1]
        case = evaluate_case(
            sitk.GetArrayViewFromImage(reference_image), sitk.GetArrayViewFromImage(prediction_image), spacing,
            labels, nsd_tolerance_mm=nsd_tolerance_mm, ignore_label=ignore_label,
            foreground_slices_only=foreground_slices_only, slice_axis=slice_axis)
        if case["evaluated_slices"] == [] or all(math.isnan(entry["dice"]) for entry in case["labels"].values()):
            logger.warning("Case %s has no voxel left to evaluate, so its metrics are NaN and left out of the means",
                           name)
        cases.append({"case": name, "reference_file": str(reference_file), "prediction_file": str(pairs[name]),
                      "spacing_mm": list(spacing), **case})

    summary = {
        "settings": {
            "reference_dir": str(reference_dir), "prediction_dir": str(prediction_dir), "labels": labels,
            "nsd_tolerance_mm": nsd_tolerance_mm, "ignore_label": ignore_label,
            "foreground_slices_only": foreground_slices_only, "slice_axis": slice_axis,
        },
        "per_case": cases,
        **_summarise_cases(cases, labels),
    }
    if output_file is not None:
        write_json_atomic(summary, output_file)
        logger.info("Wrote the evaluation of %d cases to %s", len(cases), output_file)
    return summary


def summarise_repeats(summaries: Sequence[Mapping]) -> dict:
    """Return the mean and population standard deviation over repeats (one summary per seed) of each metric.

    Each summary is what evaluate_folder returns (or its JSON file, loaded). For every label and for
    `foreground_mean`, the per-repeat means are combined, leaving out NaN values (null in JSON).
    """
    if not summaries:
        raise ValueError("summarise_repeats needs at least one evaluation summary; none was given.")
    labels = list(summaries[0]["per_label"])
    for index, summary in enumerate(summaries[1:], start=1):
        if list(summary["per_label"]) != labels:
            raise ValueError(f"Summary {index} scores labels {list(summary['per_label'])}, but summary 0 scores "
                             f"{labels}; evaluate every repeat with the same labels.")
    per_label = {
        label: {metric: _statistics([summary["per_label"][label][metric]["mean"] for summary in summaries])
                for metric in METRICS}
        for label in labels
    }
    foreground_mean = {metric: _statistics([summary["foreground_mean"][metric] for summary in summaries])
                       for metric in METRICS}
    return {"num_repeats": len(summaries), "per_label": per_label, "foreground_mean": foreground_mean}


def write_json_atomic(content, path: str | os.PathLike) -> None:
    """Write JSON (NaN as null) to a temporary file beside `path` and rename it, so a kill leaves no half file."""
    atomic_write_text(path, json.dumps(_nan_to_none(content), indent=2, allow_nan=False) + "\n")


def _restrict(reference: np.ndarray, prediction: np.ndarray,
              evaluated: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    reference = np.asarray(reference, dtype=bool)
    prediction = np.asarray(prediction, dtype=bool)
    if evaluated is None:
        return reference, prediction
    return reference & evaluated, prediction & evaluated


def _surface(mask: np.ndarray, excluded: np.ndarray | None) -> np.ndarray:
    # Excluded voxels count as inside for the erosion, so that they do not create surface next to them.
    # Outside the array counts as background (border_value=0), so a mask touching the border has surface there.
    inside = mask if excluded is None else mask | excluded
    eroded = ndimage.binary_erosion(inside, structure=ndimage.generate_binary_structure(mask.ndim, 1),
                                    border_value=0)
    return mask & ~eroded


def _count_within(surface: np.ndarray, other_surface: np.ndarray, spacing: Sequence[float],
                  tolerance_mm: float) -> int:
    """Count the voxels of `surface` within `tolerance_mm` of the nearest voxel of `other_surface`."""
    if not other_surface.any():
        return 0
    distance = ndimage.distance_transform_edt(~other_surface, sampling=spacing)
    return int(np.count_nonzero(distance[surface] <= tolerance_mm))


def _bounding_box(mask: np.ndarray) -> tuple[slice, ...]:
    box = []
    for axis in range(mask.ndim):
        other_axes = tuple(i for i in range(mask.ndim) if i != axis)
        indices = np.flatnonzero(np.any(mask, axis=other_axes))
        box.append(slice(int(indices[0]), int(indices[-1]) + 1))
    return tuple(box)


def _check_settings(labels: list[int], nsd_tolerance_mm: float, ignore_label: int | None,
                    slice_axis: int | None) -> None:
    problems = []
    if not labels:
        problems.append(Problem("-l", "no labels", "one or more label values to score", "List them, e.g. -l 1 2."))
    if not nsd_tolerance_mm >= 0:
        problems.append(Problem("--nsd-tolerance", f"{nsd_tolerance_mm} mm", "a tolerance of 0 mm or more",
                                "Give a non-negative tolerance in mm."))
    if ignore_label is not None and ignore_label in labels:
        problems.append(Problem("--ignore-label", f"{ignore_label}, which is also in -l {labels}",
                                "an ignore label that is not scored", "Remove the ignore label from -l."))
    if slice_axis is not None and slice_axis not in (0, 1, 2):
        problems.append(Problem("--slice-axis", str(slice_axis), "auto, 0, 1 or 2 (numpy axis in z, y, x order)",
                                "Give one of these axes."))
    if problems:
        raise ValidationError(problems, "Invalid evaluation settings")


def _find_label_files(folder: Path) -> dict[str, Path]:
    """Return file name -> path of the label images directly inside `folder`, hidden files skipped."""
    if not folder.is_dir():
        raise ValidationError([Problem(str(folder), "no such folder", "a folder of reference label files",
                                       "Check the path given with -ref.")], "Reference folder not found")
    files = {}
    skipped = []
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.name.startswith("."):
            continue
        if path.name.endswith(IMAGE_ENDINGS):
            files[path.name] = path
        else:
            skipped.append(path.name)
    if skipped:
        logger.warning("Skipped %d file(s) in %s that are not label images (e.g. %s)", len(skipped), folder, skipped[0])
    if not files:
        raise ValidationError([Problem(str(folder), "no label image files",
                                       f"reference label files ending in one of {', '.join(IMAGE_ENDINGS)}",
                                       "Check the path given with -ref, e.g. a dataset's labelsTs folder.")],
                              "No reference labels found")
    return files


def _summarise_cases(cases: list[dict], labels: list[int]) -> dict:
    per_label = {
        str(label): {metric: _statistics([case["labels"][str(label)][metric] for case in cases]) for metric in METRICS}
        for label in labels
    }
    foreground_mean = {}
    for metric in METRICS:
        means = [per_label[str(label)][metric]["mean"] for label in labels]
        finite = [value for value in means if value is not None and not math.isnan(value)]
        foreground_mean[metric] = float(np.mean(finite)) if finite else math.nan
    return {"per_label": per_label, "foreground_mean": foreground_mean}


def _statistics(values: Sequence[float | None]) -> dict:
    finite = np.array([value for value in values if value is not None and not math.isnan(value)], dtype=float)
    if finite.size == 0:
        return {"mean": math.nan, "std": math.nan, "count": 0}
    return {"mean": float(finite.mean()), "std": float(finite.std()), "count": int(finite.size)}


def _nan_to_none(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {key: _nan_to_none(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_nan_to_none(item) for item in value]
    return value
