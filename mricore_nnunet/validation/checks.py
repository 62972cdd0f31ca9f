"""The two entry points that commands call: check_raw_dataset for training data and
check_image_files for prediction inputs."""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from .dataset_json import channel_count, declared_label_values, layout_keys_valid, parse_dataset_json
from .files import (cases_from_dataset_key, pair_images_and_labels, scan_channel_files, scan_folder,
                    scan_labels)
from .images import (ImageInfo, UnreadableImageError, geometry_problem, in_plane_sizes, inspect_image,
                     label_value_problems, nonfinite_problem, shape_problems, unreadable_problem)
from .problems import Problem, ValidationError, display_path, raise_if_problems

logger = logging.getLogger(__name__)

_DATASET_FOLDER = re.compile(r"^Dataset(\d{3})_")


@dataclass
class DatasetSummary:
    """Summary of a dataset that passed check_raw_dataset: cases, image geometry, label values and warnings."""

    dataset_dir: str
    num_channels: int
    file_ending: str
    case_ids: list[str]
    # Size (x, y, z) and spacing in mm of channel 0 of each case, in SimpleITK axis order.
    image_sizes: dict[str, tuple[int, ...]]
    spacings: dict[str, tuple[float, ...]]
    # Distinct label values found in all masks, and per case.
    label_values: set[int]
    label_values_per_case: dict[str, set[int]]
    # Minimum in-plane size of all images in voxels, for deciding about padding.
    min_in_plane_size: int | None
    warnings: list[str] = field(default_factory=list)
    # Hidden files and files with another ending that the checks skipped.
    ignored_files: list[str] = field(default_factory=list)


@dataclass
class _CaseImages:
    """Channel files of one case after reading: their info (None where unreadable) and problems."""

    infos: list[ImageInfo | None]
    problems: list[Problem]
    nonfinite: list[tuple[str, int, int]]


def check_raw_dataset(dataset_dir: str | os.PathLike, *, num_folds: int | None = 5,
                      allow_nonfinite: bool = False) -> DatasetSummary:
    """Check an nnU-Net v2 raw dataset folder and return a summary of it.

    Checks dataset.json, the file names in imagesTr and labelsTr, that every file reads completely,
    image and label geometry, label values, NaN and Inf voxels, 4D files and the minimum image size.
    Unless num_folds is None, it also checks that there are at least `num_folds` cases. Raises one
    ValidationError listing every problem of every case. The input files are only read.
    """
    root = Path(dataset_dir)
    title = f"Dataset {root} needs fixing before nnU-Net can use it"
    if not root.is_dir():
        raise ValidationError([Problem(
            str(root), "no such folder", "a raw dataset folder DatasetXXX_Name with dataset.json, imagesTr "
            "and labelsTr", "Check the path. nnU-Net raw datasets usually lie in $nnUNet_raw.")], title)

    dataset_json, problems = parse_dataset_json(root / "dataset.json")
    if dataset_json is None or not layout_keys_valid(dataset_json):
        raise ValidationError(problems, title)

    num_channels = channel_count(dataset_json)
    file_ending = dataset_json["file_ending"]
    warnings: list[str] = []
    ignored: list[Path] = []
    if "dataset" in dataset_json:
        pairs, pair_problems = cases_from_dataset_key(dataset_json, root, num_channels)
        case_count = len(dataset_json["dataset"]) if isinstance(dataset_json["dataset"], dict) else 0
    else:
        pairs, pair_problems, case_count = _find_training_pairs(root, dataset_json, warnings, ignored)
    problems.extend(pair_problems)
    problems.extend(_num_training_problems(dataset_json, case_count, root))
    problems.extend(_fold_problems(num_folds, case_count, root))

    labels = dataset_json.get("labels")
    declared = declared_label_values(labels) if isinstance(labels, dict) else set()
    # Without a valid background label the declared set is meaningless, and dataset.json already has a Problem.
    check_label_values = 0 in declared

    summary = DatasetSummary(
        dataset_dir=str(root), num_channels=num_channels, file_ending=file_ending, case_ids=sorted(pairs),
        image_sizes={}, spacings={}, label_values=set(), label_values_per_case={}, min_in_plane_size=None,
        warnings=warnings, ignored_files=[str(path) for path in ignored])
    for case, (image_files, label_file) in sorted(pairs.items()):
        problems.extend(_check_training_case(case, image_files, label_file, root, summary,
                                             declared if check_label_values else None, allow_nonfinite))

    raise_if_problems(problems, title)
    logger.info("Checked %d cases in %s: no problems, %d warnings", len(pairs), root, len(summary.warnings))
    return summary


def check_image_files(paths: str | os.PathLike | Sequence[str | os.PathLike], num_channels: int,
                      file_ending: str, allow_nonfinite: bool = False) -> dict[str, list[str]]:
    """Check prediction inputs and return case id -> channel files.

    `paths` lists image files and folders, of which only the files directly inside are used. A single
    path may be given alone. Checks the channel suffixes, that every file reads completely, 4D files,
    NaN and Inf voxels, and that the channels of a case share one voxel grid. Raises one
    ValidationError listing every problem.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    problems: list[Problem] = []
    files: list[Path] = []
    explicit: list[Path] = []
    folders: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            folders.append(path)
            files.extend(entry for entry in path.iterdir() if entry.is_file())
        elif path.is_file():
            files.append(path)
            explicit.append(path)
        else:
            problems.append(Problem(str(path), "no such file or folder", "an existing image file or folder",
                                    "Check the path."))

    channel_names = {str(index): f"channel {index}" for index in range(num_channels)}
    location = folders[0] if len(folders) == 1 and not explicit else None
    scan = scan_channel_files(files, channel_names, file_ending, root=None, location=location,
                              explicit=explicit)
    problems.extend(scan.problems)

    cases = scan.ordered_cases()
    for case, case_files in cases.items():
        # Prediction pads small images to the patch size, so only training data has a minimum size.
        checked = _check_case_images(case, case_files, num_channels, None, check_size=False)
        problems.extend(checked.problems)
        if checked.nonfinite:
            problem = nonfinite_problem(checked.nonfinite)
            if allow_nonfinite:
                logger.warning("%s", problem)
            else:
                problems.append(problem)

    raise_if_problems(problems, "Input images need fixing before prediction")
    return cases


def _find_training_pairs(root: Path, dataset_json: dict, warnings: list[str],
                         ignored: list[Path]) -> tuple[dict[str, tuple[list[str], str]], list[Problem], int]:
    """Scan imagesTr and labelsTr, pair them, and return the pairs, problems and number of image cases."""
    channel_names = dataset_json["channel_names"]
    file_ending = dataset_json["file_ending"]
    images_dir, labels_dir = root / "imagesTr", root / "labelsTr"
    if not images_dir.is_dir():
        return {}, [Problem(display_path(images_dir, root), "no such folder",
                            "an imagesTr folder with the training images",
                            "Create imagesTr and put the images there as <case>_0000" + file_ending + ".")], 0

    images = scan_folder(images_dir, channel_names, file_ending, root=root)
    labels = scan_labels(labels_dir, file_ending, root=root)
    pairs, pair_problems = pair_images_and_labels(images, labels, labels_dir, file_ending, root=root)
    warnings.extend(images.warnings + labels.warnings)
    ignored.extend(images.ignored + labels.ignored)

    test_dir = root / "imagesTs"
    if test_dir.is_dir():
        # Test images are checked in full by check_image_files before prediction, so here a naming
        # problem is only a warning.
        test_scan = scan_folder(test_dir, channel_names, file_ending, root=root)
        warnings.extend(str(problem) for problem in test_scan.problems)
        warnings.extend(test_scan.warnings)

    case_count = len(set(images.cases) | images.intended_ids)
    return pairs, images.problems + labels.problems + pair_problems, case_count


def _num_training_problems(dataset_json: dict, case_count: int, root: Path) -> list[Problem]:
    declared = dataset_json.get("numTraining")
    if not isinstance(declared, int) or isinstance(declared, bool) or declared == case_count:
        return []
    other_fix = "add the missing cases" if declared > case_count else "remove the extra cases"
    return [Problem(display_path(root / "dataset.json", root.parent), f"numTraining = {declared}",
                    f"{case_count}, the number of training cases found",
                    f"Set numTraining to {case_count}, or {other_fix}.")]


def _fold_problems(num_folds: int | None, case_count: int, root: Path) -> list[Problem]:
    if num_folds is None or case_count >= num_folds or case_count == 0:
        return []
    match = _DATASET_FOLDER.match(root.name)
    dataset = str(int(match.group(1))) if match else root.name
    preprocessed = os.environ.get("nnUNet_preprocessed", "$nnUNet_preprocessed")
    splits_file = Path(preprocessed) / root.name / "splits_final.json"
    return [Problem(
        str(root), f"{case_count} training case(s)",
        f"at least {num_folds} cases for {num_folds}-fold cross-validation",
        f"Train on all cases with fold 'all' (`nnUNetv2_train {dataset} 2d all ...`, no validation split), or "
        f"write your own splits to {splits_file} (a list with one {{\"train\": [...], \"val\": [...]}} entry "
        f"per fold).")]


def _check_training_case(case: str, image_files: list[str], label_file: str, root: Path,
                         summary: DatasetSummary, declared: set[int] | None,
                         allow_nonfinite: bool) -> list[Problem]:
    """Check the images and label of one case, and record size, spacing and label values in the summary."""
    checked = _check_case_images(case, image_files, summary.num_channels, root)
    problems = checked.problems
    if checked.nonfinite:
        problem = nonfinite_problem(checked.nonfinite)
        if allow_nonfinite:
            summary.warnings.append(str(problem))
        else:
            problems.append(problem)

    reference = checked.infos[0]
    if reference is not None and reference.dimension in (2, 3):
        summary.image_sizes[case] = reference.size
        summary.spacings[case] = reference.spacing
        smallest = min(in_plane_sizes(reference.size, reference.spacing)[0])
        if summary.min_in_plane_size is None or smallest < summary.min_in_plane_size:
            summary.min_in_plane_size = smallest

    display_file = display_path(label_file, root)
    try:
        label = inspect_image(label_file, with_values=True)
    except UnreadableImageError as error:
        problems.append(unreadable_problem(display_file, str(error)))
        return problems
    problems.extend(shape_problems(label, display_file, num_channels=summary.num_channels, case_id=case,
                                   is_label=True))
    if _comparable(label, reference):
        mismatch = geometry_problem(display_file, label, display_path(image_files[0], root), reference,
                                    is_label=True)
        if mismatch is not None:
            problems.append(mismatch)

    if declared is not None:
        problems.extend(label_value_problems(display_file, label.values, declared))
    integer_values = {int(v) for v in label.values.tolist() if v == v and float(v).is_integer()}
    summary.label_values_per_case[case] = integer_values
    summary.label_values |= integer_values
    if integer_values == {0}:
        summary.warnings.append(
            f"{display_file}: contains only background (0), so case {case} adds no foreground examples")
    return problems


def _check_case_images(case: str, image_files: list[str], num_channels: int, root: Path | None,
                       *, check_size: bool = True) -> _CaseImages:
    """Read every channel of a case, check each file, and check that all channels share channel 0's grid."""
    result = _CaseImages(infos=[], problems=[], nonfinite=[])
    for path in image_files:
        display_file = display_path(path, root)
        try:
            info = inspect_image(path)
        except UnreadableImageError as error:
            result.problems.append(unreadable_problem(display_file, str(error)))
            result.infos.append(None)
            continue
        result.infos.append(info)
        result.problems.extend(shape_problems(info, display_file, num_channels=num_channels, case_id=case,
                                              check_size=check_size))
        if info.nan_count or info.inf_count:
            result.nonfinite.append((display_file, info.nan_count, info.inf_count))

    reference = result.infos[0]
    for path, info in zip(image_files[1:], result.infos[1:]):
        if _comparable(info, reference):
            mismatch = geometry_problem(display_path(path, root), info, display_path(image_files[0], root),
                                        reference, is_label=False)
            if mismatch is not None:
                result.problems.append(mismatch)
    return result


def _comparable(info: ImageInfo | None, reference: ImageInfo | None) -> bool:
    # 4D and unreadable files already have their own Problem, so comparing their grids would only add noise.
    return (info is not None and reference is not None
            and info.dimension in (2, 3) and reference.dimension in (2, 3))


def check_fold_count(preprocessed_dataset_dir: str | os.PathLike, fold: int, num_folds: int = 5) -> None:
    """Raise ValidationError before training when fold `fold` cannot exist for this dataset.

    With a `splits_final.json` the fold must index one of its splits. Without one, nnU-Net makes
    `num_folds` random splits, which needs at least `num_folds` training cases.
    """
    root = Path(preprocessed_dataset_dir)
    splits_file = root / "splits_final.json"
    title = f"Fold {fold} cannot be trained for {root.name}"
    if splits_file.is_file():
        splits = json.loads(splits_file.read_text(encoding="utf-8"))
        if not 0 <= int(fold) < len(splits):
            raise ValidationError([Problem(
                str(splits_file), f"{len(splits)} split(s)", f"a split for fold {fold}",
                f"Use a fold from 0 to {len(splits) - 1}, fold 'all', or add splits to {splits_file}.")], title)
        return

    dataset_json = json.loads((root / "dataset.json").read_text(encoding="utf-8"))
    problems = _fold_problems(num_folds, int(dataset_json["numTraining"]), root)
    if problems:
        raise ValidationError(problems, title)
