"""Checks for few-shot dataset derivation and for scoring predictions against reference labels."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import SimpleITK as sitk

from .images import ImageInfo, geometry_differences
from .problems import Problem, format_size, raise_if_problems


def check_fewshot_request(dataset_dir: str | os.PathLike, num_cases: int, num_volumes: int,
                          num_validation_volumes: int, slices_per_volume: int, seed: int) -> None:
    """Raise ValidationError unless K training and V validation volumes with M slices each can be drawn.

    K, V and M must be at least 1, K + V must not exceed the number of training cases, and the seed must
    be a non-negative integer, as numpy.random.default_rng requires.
    """
    where = str(dataset_dir)
    problems = []
    for option, value in (("--volumes", num_volumes), ("--validation-volumes", num_validation_volumes),
                          ("--slices-per-volume", slices_per_volume)):
        if value < 1:
            problems.append(Problem(where, f"{option} {value}", f"{option} of at least 1",
                                    f"Give {option} a positive number."))
    if seed < 0:
        problems.append(Problem(where, f"--seed {seed}", "a seed of 0 or more", "Give a non-negative seed."))
    if num_volumes >= 1 and num_validation_volumes >= 1 and num_volumes + num_validation_volumes > num_cases:
        problems.append(Problem(
            where, f"{num_cases} training cases, but --volumes {num_volumes} + --validation-volumes "
                   f"{num_validation_volumes} = {num_volumes + num_validation_volumes} requested",
            f"at most {num_cases} training and validation volumes together",
            "Lower --volumes or --validation-volumes, or add training cases to the source dataset."))
    raise_if_problems(problems, "Invalid few-shot request")


def check_slice_counts(slice_counts: Mapping[str, tuple[int, int]], label_files: Mapping[str, str],
                       slices_per_volume: int, axis: int) -> None:
    """Raise ValidationError for drawn volumes that have too few slices to annotate M of them.

    `slice_counts` maps a case to (slices with foreground, all slices) along `axis`. A volume with
    foreground needs M foreground slices. A volume without any foreground falls back to all its slices,
    so it needs M slices in total.
    """
    problems = []
    for case, (foreground, total) in sorted(slice_counts.items()):
        if 0 < foreground < slices_per_volume:
            problems.append(Problem(
                str(label_files[case]), f"{foreground} slice(s) with foreground along axis {axis} in case {case}",
                f"at least --slices-per-volume {slices_per_volume} such slices",
                f"Lower --slices-per-volume to {foreground} or less, or draw other volumes with another --seed."))
        elif foreground == 0 and total < slices_per_volume:
            problems.append(Problem(
                str(label_files[case]), f"{total} slice(s) along axis {axis} in case {case}",
                f"at least --slices-per-volume {slices_per_volume} slices",
                f"Lower --slices-per-volume to {total} or less, or choose another --slice-axis."))
    raise_if_problems(problems, "Too few slices to annotate")


def check_volume_sizes(image_sizes: Mapping[str, tuple[int, ...]], dataset_dir: str | os.PathLike) -> None:
    """Raise ValidationError unless every case is a 3D volume, because slices are drawn from volumes."""
    problems = [
        Problem(f"{dataset_dir} case {case}", f"a {len(size)}D image of size {format_size(size)}",
                "a 3D volume", "Derive few-shot datasets from 3D volumes only; a 2D image is a single slice.")
        for case, size in sorted(image_sizes.items()) if len(size) != 3
    ]
    raise_if_problems(problems, "Few-shot derivation needs 3D volumes")


def check_prediction_pairs(reference_files: Mapping[str, Path], prediction_dir: str | os.PathLike) -> dict[str, Path]:
    """Return file name -> prediction file for each reference, after checking that they can be compared.

    Every reference file needs a prediction of the same name in `prediction_dir` on the same voxel grid
    (size, spacing, origin and direction, with the tolerances of the dataset checks). Only the headers
    are read. Raises one ValidationError that names every missing prediction and every mismatch.
    """
    folder = Path(prediction_dir)
    problems = []
    pairs = {}
    for name, reference in sorted(reference_files.items()):
        prediction = folder / name
        if not prediction.is_file():
            problems.append(Problem(
                str(prediction), f"no prediction for the reference {reference}",
                "one prediction file per reference file, with the same name",
                "Predict the missing case, or move its reference out of the folder to score a subset."))
            continue
        pairs[name] = prediction
        try:
            reference_info = _read_header(reference)
            prediction_info = _read_header(prediction)
        except RuntimeError as error:
            problems.append(Problem(str(prediction), f"a file that SimpleITK cannot read ({error})",
                                    "a readable image", "Check the file, or predict the case again."))
            continue
        found, expected = geometry_differences(prediction_info, reference_info)
        if found:
            problems.append(Problem(
                str(prediction), f"a prediction for case {name} with " + ", ".join(found),
                ", ".join(expected) + f" as in the reference {reference}",
                "Check that the prediction belongs to this case and was written in the reference's geometry "
                "(nnU-Net's predictions are)."))
    raise_if_problems(problems, f"Predictions in {folder} do not match the references")
    return pairs


def _read_header(path: Path) -> ImageInfo:
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    return ImageInfo(
        size=tuple(int(n) for n in reader.GetSize()),
        spacing=tuple(float(s) for s in reader.GetSpacing()),
        origin=tuple(float(o) for o in reader.GetOrigin()),
        direction=tuple(float(d) for d in reader.GetDirection()),
        components=int(reader.GetNumberOfComponents()),
    )

