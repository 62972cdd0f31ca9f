"""Finding case files by their channel suffix and pairing training images with labels."""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from .images import four_d_problem, read_header_size
from .problems import Problem, display_path, raise_if_problems

logger = logging.getLogger(__name__)

# Endings of image formats that SimpleITK or nnU-Net read, matched case-insensitively, longest first.
IMAGE_ENDINGS = (".nii.gz", ".img.gz", ".hdr.gz", ".nii", ".mha", ".mhd", ".nrrd", ".nhdr", ".tiff", ".tif",
                 ".png", ".bmp", ".jpeg", ".jpg", ".dcm", ".hdr", ".img")

_CHANNEL_SUFFIX = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")
_OTHER_SEPARATOR = re.compile(r"^(?P<case>.+)(?P<separator>[.\- ])(?P<channel>\d{4})$")


@dataclass
class CaseScan:
    """Case files found by their names, with the problems and warnings that the names raised."""

    # Cases whose files all parsed, as case id -> channel index -> file.
    cases: dict[str, dict[int, Path]] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    # Hidden files and files with another ending, which the scan skips.
    ignored: list[Path] = field(default_factory=list)
    # Case ids that misnamed or incomplete files were meant to have, so that their labels are not
    # reported a second time as labels without images.
    intended_ids: set[str] = field(default_factory=set)

    def ordered_cases(self) -> dict[str, list[str]]:
        """Return case id -> channel files in channel order, sorted by case id."""
        return {case: [str(channels[index]) for index in sorted(channels)]
                for case, channels in sorted(self.cases.items())}


def find_cases(images_dir: str | os.PathLike, channel_names: dict, file_ending: str) -> dict[str, list[str]]:
    """Map each case id in images_dir to its channel files, ordered by channel index.

    Files are named <case>_XXXX<file_ending> with a 4-digit channel index XXXX. Hidden files are skipped.
    Raises ValidationError listing every misnamed file, undeclared channel index and incomplete case.
    """
    folder = Path(images_dir)
    if not folder.is_dir():
        raise_if_problems([Problem(str(folder), "no such folder", "a folder with the image files",
                                   "Check the path.")], "Image folder not found")
    scan = scan_folder(folder, channel_names, file_ending, root=folder.parent)
    raise_if_problems(scan.problems, f"Invalid image file names in {folder}")
    return scan.ordered_cases()


def scan_folder(folder: Path, channel_names: dict, file_ending: str, *, root: Path | None) -> CaseScan:
    """Scan the files directly inside a folder (not its subfolders) for channel files."""
    files = [entry for entry in folder.iterdir() if entry.is_file()]
    return scan_channel_files(files, channel_names, file_ending, root=root, location=folder)


def scan_channel_files(files: Iterable[Path], channel_names: dict, file_ending: str, *, root: Path | None,
                       location: Path | None = None, explicit: Iterable[Path] = ()) -> CaseScan:
    """Group files into cases by their channel suffix and collect a Problem for each naming error.

    Files listed in `explicit` were named by the user, so a wrong ending is a Problem there instead of
    a reason to skip the file.
    """
    explicit = set(explicit)
    scan = CaseScan()
    parsed: list[tuple[Path, str, int]] = []
    other_endings: dict[str, list[Path]] = {}
    matching_count = 0

    for path in sorted(files):
        name = path.name
        display_file = display_path(path, root)
        if name.startswith("."):
            # Includes macOS "._name" resource-fork files, which carry the name of a real image.
            # NOTE: nnU-Net 2.8.1 lists case files without skipping hidden ones, so callers that hand this
            # folder to nnU-Net should act on DatasetSummary.ignored_files.
            logger.debug("Skipping hidden file %s", path)
            scan.ignored.append(path)
            continue
        if not name.endswith(file_ending):
            ending = image_ending(name)
            if path in explicit:
                scan.problems.append(Problem(
                    display_file, f"the file ending {ending or Path(name).suffix or 'none'!r}",
                    f"{file_ending!r}, the file_ending of the dataset",
                    f"Convert the file to {file_ending}."))
            elif ending is not None:
                other_endings.setdefault(ending, []).append(path)
                scan.ignored.append(path)
            else:
                logger.debug("Skipping %s: not an image file", path)
                scan.ignored.append(path)
            continue

        matching_count += 1
        stem = name[:-len(file_ending)]
        match = _CHANNEL_SUFFIX.match(stem)
        if match is None:
            problem, intended_id = _misnamed_file_problem(path, display_file, stem, channel_names, file_ending)
            scan.problems.append(problem)
            scan.intended_ids.add(intended_id)
            continue
        parsed.append((path, match["case"], int(match["channel"])))

    parsed = _remove_double_suffixes(parsed, scan, file_ending, root)
    _group_by_case(parsed, scan, channel_names, file_ending, root)
    _check_complete_cases(scan, channel_names, file_ending, root, location)
    _check_endings(scan, matching_count, other_endings, file_ending, root, location)
    return scan


def image_ending(name: str) -> str | None:
    """Return the image-format ending of a file name, or None when it is no known image format."""
    lower = name.lower()
    return next((ending for ending in IMAGE_ENDINGS if lower.endswith(ending)), None)


def channel_pattern(file_ending: str) -> str:
    return f"<case>_XXXX{file_ending} with a 4-digit channel index XXXX"


def _describe_channels(channel_names: dict) -> str:
    return ", ".join(f"{int(index):04d} ({name})" for index, name in sorted(channel_names.items(),
                                                                            key=lambda item: int(item[0])))


def _misnamed_file_problem(path: Path, display_file: str, stem: str, channel_names: dict,
                           file_ending: str) -> tuple[Problem, str]:
    """Describe a file with the right ending but no valid channel suffix, and return it with the intended case id."""
    num_channels = len(channel_names)
    other = _OTHER_SEPARATOR.match(stem)
    if other is not None:
        fixed = f"{other['case']}_{other['channel']}{file_ending}"
        return Problem(display_file, f"'{other['separator']}' between case id and channel index",
                       channel_pattern(file_ending), f"Rename it to {fixed}."), other["case"]

    # An MSD file has no suffix because it contains all channels in a 4th dimension, so renaming would not help.
    size = read_header_size(path)
    if size is not None and len(size) == 4:
        return four_d_problem(display_file, size, num_channels, stem), stem

    if num_channels == 1:
        fix = f"Rename it to {stem}_0000{file_ending}."
    else:
        fix = (f"Rename it to {stem}_XXXX{file_ending} with XXXX the index of its channel: "
               f"{_describe_channels(channel_names)}.")
    return Problem(display_file, "no channel suffix", channel_pattern(file_ending), fix), stem


def _remove_double_suffixes(parsed: list[tuple[Path, str, int]], scan: CaseScan, file_ending: str,
                            root: Path | None) -> list[tuple[Path, str, int]]:
    """Report files such as p02_0000_0000 whose channel suffix was appended twice, and drop them.

    Case ids like sub_0001 legitimately end in 4 digits, so a repeated suffix counts as an error only
    when other cases of the folder have ids that do not end in 4 digits.
    """
    candidates = []
    for path, case, channel in parsed:
        inner = _CHANNEL_SUFFIX.match(case)
        if inner is not None and int(inner["channel"]) == channel:
            candidates.append((path, case, channel))
    if not candidates:
        return parsed
    candidate_ids = {case for _, case, _ in candidates}
    other_ids = {case for _, case, _ in parsed if case not in candidate_ids}
    if not any(_CHANNEL_SUFFIX.match(case) is None for case in other_ids):
        return parsed

    for path, case, channel in candidates:
        base = _CHANNEL_SUFFIX.match(case)["case"]
        scan.problems.append(Problem(
            display_path(path, root), f"the channel suffix twice (_{channel:04d}_{channel:04d})",
            channel_pattern(file_ending), f"Rename it to {base}_{channel:04d}{file_ending}."))
        scan.intended_ids.add(base)
    flagged = {path for path, _, _ in candidates}
    return [entry for entry in parsed if entry[0] not in flagged]


def _group_by_case(parsed: list[tuple[Path, str, int]], scan: CaseScan, channel_names: dict,
                   file_ending: str, root: Path | None) -> None:
    num_channels = len(channel_names)
    for path, case, channel in parsed:
        if channel >= num_channels:
            scan.problems.append(Problem(
                display_path(path, root), f"channel index {channel:04d}",
                f"one of the channels declared in channel_names of dataset.json: "
                f"{_describe_channels(channel_names)}",
                "Rename the file if its index is wrong, or declare the channel in channel_names."))
            scan.intended_ids.add(case)
            continue
        scan.cases.setdefault(case, {})[channel] = path


def _check_complete_cases(scan: CaseScan, channel_names: dict, file_ending: str, root: Path | None,
                          location: Path | None) -> None:
    num_channels = len(channel_names)
    for case in sorted(scan.cases):
        channels = scan.cases[case]
        missing = [index for index in range(num_channels) if index not in channels]
        if not missing:
            continue
        folder = location if location is not None else next(iter(channels.values())).parent
        missing_files = [display_path(folder / f"{case}_{index:04d}{file_ending}", root) for index in missing]
        present = ", ".join(f"{index:04d}" for index in sorted(channels))
        scan.problems.append(Problem(
            ", ".join(missing_files), f"case {case} with channel files {present} only",
            f"one file per channel: {_describe_channels(channel_names)}",
            f"Add the missing file(s), or remove all files of case {case} (and its label)."))
        scan.intended_ids.add(case)
        del scan.cases[case]


def _check_endings(scan: CaseScan, matching_count: int, other_endings: dict[str, list[Path]],
                   file_ending: str, root: Path | None, location: Path | None) -> None:
    problems, warnings = _ending_problems(matching_count, other_endings, file_ending,
                                          display_path(location, root) if location is not None else "the input files")
    # Files with a wrong ending that the user named explicitly are already reported one by one.
    if matching_count == 0 and not other_endings and scan.problems:
        problems = []
    scan.problems.extend(problems)
    scan.warnings.extend(warnings)


def _ending_problems(matching_count: int, other_endings: dict[str, list[Path]], file_ending: str,
                     where: str, *, report_empty: bool = True) -> tuple[list[Problem], list[str]]:
    """Report a folder without files of the declared ending, and warn about skipped files of other endings."""
    if matching_count == 0 and other_endings:
        described = ", ".join(f"{len(paths)} ending in '{ending}' (e.g. {paths[0].name})"
                              for ending, paths in sorted(other_endings.items()))
        first_ending = sorted(other_endings)[0]
        return [Problem(
            where, f"no file ending in '{file_ending}' but {described}",
            f"files ending in '{file_ending}', the file_ending declared in dataset.json",
            f"Set \"file_ending\": \"{first_ending}\" in dataset.json, or convert the files to "
            f"'{file_ending}', because all images and labels of a dataset must use one ending.")], []
    if matching_count == 0:
        if not report_empty:
            return [], []
        return [Problem(where, "no image files", f"files named {channel_pattern(file_ending)}",
                        "Check the path and put the images there.")], []
    warnings = []
    for ending, paths in sorted(other_endings.items()):
        message = (f"{where}: skipped {len(paths)} file(s) ending in '{ending}' (e.g. {paths[0].name}) "
                   f"because the dataset's file_ending is '{file_ending}'")
        logger.warning(message)
        warnings.append(message)
    return [], warnings


@dataclass
class LabelScan:
    """Label files of a labels folder keyed by case id."""

    labels: dict[str, Path] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    ignored: list[Path] = field(default_factory=list)


def scan_labels(labels_dir: Path, file_ending: str, *, root: Path | None) -> LabelScan:
    """Find <case><file_ending> label files, skipping hidden files, and report a folder with only other endings."""
    scan = LabelScan()
    if not labels_dir.is_dir():
        scan.problems.append(Problem(display_path(labels_dir, root), "no such folder",
                                     f"a labelsTr folder with one <case>{file_ending} file per training case",
                                     "Create labelsTr and put the masks there."))
        return scan
    other_endings: dict[str, list[Path]] = {}
    for path in sorted(entry for entry in labels_dir.iterdir() if entry.is_file()):
        if path.name.startswith("."):
            logger.debug("Skipping hidden file %s", path)
            scan.ignored.append(path)
        elif path.name.endswith(file_ending):
            scan.labels[path.name[:-len(file_ending)]] = path
        else:
            ending = image_ending(path.name)
            if ending is not None:
                other_endings.setdefault(ending, []).append(path)
            scan.ignored.append(path)
    # An empty labels folder is reported through the images that have no label.
    problems, warnings = _ending_problems(len(scan.labels), other_endings, file_ending,
                                          display_path(labels_dir, root), report_empty=False)
    scan.problems.extend(problems)
    scan.warnings.extend(warnings)
    return scan


def pair_images_and_labels(images: CaseScan, labels: LabelScan, labels_dir: Path, file_ending: str,
                           *, root: Path | None) -> tuple[dict[str, tuple[list[str], str]], list[Problem]]:
    """Pair each image case with its label, and report images without label and labels without images."""
    problems: list[Problem] = []
    image_ids = set(images.cases) | images.intended_ids
    unmatched_labels = {case: path for case, path in labels.labels.items() if case not in image_ids}

    for case in sorted(image_ids - set(labels.labels)):
        suffixed = next((label_id for label_id in sorted(unmatched_labels)
                         if (match := _CHANNEL_SUFFIX.match(label_id)) and match["case"] == case), None)
        if suffixed is not None:
            problems.append(Problem(
                display_path(unmatched_labels.pop(suffixed), root), "a channel suffix on a label file",
                f"{display_path(labels_dir / (case + file_ending), root)} (labels have no channel suffix)",
                f"Rename it to {case}{file_ending}."))
            continue
        if not labels.problems:
            problems.append(Problem(
                display_path(labels_dir / f"{case}{file_ending}", root), f"no label file for case {case}",
                "one label file per training case in labelsTr",
                "Add the label, or move the case's image files out of imagesTr."))

    for case, path in sorted(unmatched_labels.items()):
        problems.append(Problem(
            display_path(path, root), f"a label without images (no {case}_0000{file_ending} in imagesTr)",
            "image files for every label",
            "Add the case's image files to imagesTr, or move the label out of labelsTr."))

    pairs = {case: (files, str(labels.labels[case]))
             for case, files in images.ordered_cases().items() if case in labels.labels}
    return pairs, problems


def cases_from_dataset_key(dataset_json: dict, dataset_dir: Path,
                           num_channels: int) -> tuple[dict[str, tuple[list[str], str]], list[Problem]]:
    """Read the optional "dataset" entry of dataset.json, which lists each case's files explicitly.

    Relative paths are resolved against the dataset folder and environment variables are expanded,
    as nnU-Net does.
    """
    file = display_path(dataset_dir / "dataset.json", dataset_dir.parent)
    entries = dataset_json["dataset"]
    if not isinstance(entries, dict) or not entries:
        return {}, [Problem(file, "a \"dataset\" entry that is not a non-empty object",
                            '"dataset": {"case": {"images": [...], "label": "..."}}',
                            "Fix the entry, or remove it to use the imagesTr and labelsTr folders.")]
    pairs: dict[str, tuple[list[str], str]] = {}
    problems: list[Problem] = []
    for case, entry in sorted(entries.items()):
        images = entry.get("images") if isinstance(entry, dict) else None
        label = entry.get("label") if isinstance(entry, dict) else None
        if not isinstance(images, list) or not all(isinstance(p, str) for p in images) or not isinstance(label, str):
            problems.append(Problem(file, f"dataset entry \"{case}\" = {entry!r}",
                                    '{"images": ["<path of channel 0>", ...], "label": "<path>"}',
                                    "Give the image paths as a list and the label path as a string."))
            continue
        if len(images) != num_channels:
            problems.append(Problem(file, f"{len(images)} image paths for case \"{case}\"",
                                    f"{num_channels}, one per channel in channel_names",
                                    "List one image file per channel, in channel order."))
            continue
        resolved = [_resolve_listed_path(p, dataset_dir) for p in images]
        label_path = _resolve_listed_path(label, dataset_dir)
        missing = [p for p in resolved + [label_path] if not p.is_file()]
        for path in missing:
            problems.append(Problem(str(path), "no such file", f"the file that dataset.json lists for case {case}",
                                    "Fix the path in the \"dataset\" entry of dataset.json."))
        if not missing:
            pairs[case] = ([str(p) for p in resolved], str(label_path))
    return pairs, problems


def _resolve_listed_path(text: str, dataset_dir: Path) -> Path:
    path = Path(os.path.expandvars(text))
    return path if path.is_absolute() else (dataset_dir / path).resolve()
