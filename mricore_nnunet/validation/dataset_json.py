"""Reading and checking an nnU-Net v2 dataset.json."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from .problems import Problem, raise_if_problems

REQUIRED_KEYS = ("channel_names", "labels", "numTraining", "file_ending")

_CHANNEL_FILE = re.compile(r"_\d{4}\.nii(\.gz)?$")
_TASK_FOLDER = re.compile(r"^Task(\d+)_(.+)$")


def load_dataset_json(path: str | os.PathLike) -> dict:
    """Read and check an nnU-Net v2 dataset.json.

    `path` is the dataset.json file or the dataset folder that contains it. Raises ValidationError
    listing every problem: invalid JSON (with line and column), an MSD or nnU-Net v1 file that needs
    conversion, missing keys, and invalid channel_names, labels, numTraining or file_ending.
    """
    json_path = _resolve_json_path(path)
    data, problems = parse_dataset_json(json_path)
    raise_if_problems(problems, f"Invalid dataset.json {json_path}")
    return data


def parse_dataset_json(json_path: Path) -> tuple[dict | None, list[Problem]]:
    """Read dataset.json and collect its problems without raising.

    Returns None in place of the dict when the file is missing, is not valid JSON, is not a JSON
    object, or is in MSD or nnU-Net v1 format, because then no later check can use it.
    """
    data, problems = _read_json_object(json_path)
    if data is None:
        return None, problems

    legacy_problem = _legacy_format_problem(data, json_path)
    if legacy_problem is not None:
        return None, [legacy_problem]

    file = str(json_path)
    for key in REQUIRED_KEYS:
        if key not in data:
            problems.append(_missing_key_problem(file, key))
    if "channel_names" in data:
        problems.extend(_check_channel_names(data["channel_names"], file))
    if "file_ending" in data:
        problems.extend(_check_file_ending(data["file_ending"], file))
    if "numTraining" in data:
        problems.extend(_check_num_training(data["numTraining"], file))
    if "labels" in data:
        problems.extend(_check_labels(data["labels"], data.get("regions_class_order"), file))
    return data, problems


def layout_keys_valid(dataset_json: dict) -> bool:
    """Return True when channel_names and file_ending are valid, so that case files can be searched."""
    return ("channel_names" in dataset_json and "file_ending" in dataset_json
            and not _check_channel_names(dataset_json["channel_names"], "")
            and not _check_file_ending(dataset_json["file_ending"], ""))


def channel_count(dataset_json: dict) -> int:
    """Return the number of input channels that dataset.json declares."""
    return len(dataset_json["channel_names"])


def declared_label_values(labels: dict) -> set[int]:
    """Return every integer label value that `labels` declares, region members and ignore label included.

    Values that are not integers are skipped, because _check_labels reports them.
    """
    values: set[int] = set()
    for value in labels.values():
        members = value if isinstance(value, (list, tuple)) else [value]
        for member in members:
            integer = _as_label_int(member)
            if integer is not None:
                values.add(integer)
    return values


def _resolve_json_path(path: str | os.PathLike) -> Path:
    path = Path(path)
    if path.is_dir():
        return path / "dataset.json"
    return path


def _read_json_object(json_path: Path) -> tuple[dict | None, list[Problem]]:
    file = str(json_path)
    if not json_path.is_file():
        return None, [Problem(
            file, "no such file", "a dataset.json in the dataset folder",
            "Check the dataset path, or write dataset.json as described in nnU-Net's "
            "documentation/dataset_format.md (keys channel_names, labels, numTraining, file_ending).")]

    raw = json_path.read_bytes()
    if raw.startswith(b"\xef\xbb\xbf"):
        return None, [Problem(
            file, "a UTF-8 byte order mark (BOM) before the first '{'", "plain UTF-8 JSON",
            "Save the file as UTF-8 without BOM, because nnU-Net's JSON reader rejects the BOM.")]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        return None, [Problem(
            file, f"bytes that are not valid UTF-8 at byte offset {error.start}", "UTF-8 encoded JSON",
            "Save the file with UTF-8 encoding.")]

    duplicates: list[str] = []
    try:
        data = json.loads(text, object_pairs_hook=lambda pairs: _reject_duplicates(pairs, duplicates))
    except json.JSONDecodeError as error:
        return None, [_json_syntax_problem(file, text, error)]

    if not isinstance(data, dict):
        return None, [Problem(
            file, f"a JSON {type(data).__name__} at the top level", "a JSON object ({...})",
            "Write dataset.json as one object with the keys channel_names, labels, numTraining and file_ending.")]

    problems = [
        Problem(file, f"the key \"{key}\" twice in one object", "each key once",
                "Remove or rename the duplicate. Python's json module keeps only the last value, "
                "so the first one is lost.")
        for key in duplicates
    ]
    return data, problems


def _reject_duplicates(pairs: list[tuple[str, Any]], duplicates: list[str]) -> dict:
    result: dict = {}
    for key, value in pairs:
        if key in result:
            duplicates.append(key)
        result[key] = value
    return result


def _json_syntax_problem(file: str, text: str, error: json.JSONDecodeError) -> Problem:
    lines = text.splitlines()
    line_text = lines[error.lineno - 1].strip() if 0 < error.lineno <= len(lines) else ""
    found = f"invalid JSON at line {error.lineno}, column {error.colno}: {error.msg}"
    if line_text:
        found += f" (line {error.lineno} reads: {line_text[:80]})"
    return Problem(file, found, "valid JSON", _json_syntax_hint(text, error))


def _json_syntax_hint(text: str, error: json.JSONDecodeError) -> str:
    before = text[:error.pos].rstrip()
    at = text[error.pos:error.pos + 1]
    if before.endswith(",") and at in ("}", "]"):
        comma_line = before.count("\n") + 1
        return (f"Remove the trailing comma at the end of line {comma_line}: "
                f"JSON allows no comma before a closing '{at}'.")
    if at == "'":
        return "Use double quotes for JSON keys and strings, not single quotes."
    if text.startswith("//", error.pos) or text.startswith("/*", error.pos) or at == "#":
        return "Remove the comment: JSON has no comment syntax."
    return ("Fix the syntax at that position. `python -m json.tool dataset.json` reports the same error "
            "after each fix.")


def _legacy_format_problem(data: dict, json_path: Path) -> Problem | None:
    has_legacy_keys = "modality" in data or isinstance(data.get("training"), list)
    lacks_v2_keys = "channel_names" not in data or "file_ending" not in data
    if not (has_legacy_keys and lacks_v2_keys):
        return None

    task_folder = json_path.parent
    legacy_keys = [key for key in ("modality", "training", "test") if key in data]
    missing_keys = [key for key in ("channel_names", "file_ending") if key not in data]
    found_keys = ", ".join(f"'{key}'" for key in legacy_keys)
    missing = " and ".join(f"'{key}'" for key in missing_keys)
    expected = "an nnU-Net v2 dataset.json with channel_names, labels, numTraining and file_ending"
    msd_command = f"nnUNetv2_convert_MSD_dataset -i {task_folder}"
    v1_command = f"nnUNetv2_convert_old_nnUNet_dataset {task_folder} {_suggest_dataset_name(task_folder.name)}"

    images_dir = task_folder / "imagesTr"
    image_names = [p.name for p in images_dir.iterdir() if p.is_file()] if images_dir.is_dir() else []
    with_suffix = [name for name in image_names if not name.startswith(".") and _CHANNEL_FILE.search(name)]
    if not image_names:
        found = f"an MSD or nnU-Net v1 dataset.json (keys {found_keys}, without {missing})"
        fix = (f"Convert the task folder to nnU-Net v2 format: for a Medical Segmentation Decathlon task run "
               f"`{msd_command}`, for an nnU-Net v1 task run `{v1_command}`. Then use the new DatasetXXX_Name "
               f"folder in nnUNet_raw.")
    elif with_suffix:
        found = f"an nnU-Net v1 dataset.json (keys {found_keys}, without {missing})"
        fix = (f"Convert the nnU-Net v1 task with `{v1_command}` and use the new dataset folder it writes "
               f"to nnUNet_raw.")
    else:
        found = f"a Medical Segmentation Decathlon (MSD) dataset.json (keys {found_keys}, without {missing})"
        fix = (f"Convert the MSD task with `{msd_command}`, which splits the 4D images into one file per "
               f"channel, writes an nnU-Net v2 dataset.json and a DatasetXXX_Name folder in nnUNet_raw. "
               f"Then use that folder.")
    return Problem(str(json_path), found, expected, fix)


def _suggest_dataset_name(folder_name: str) -> str:
    match = _TASK_FOLDER.match(folder_name)
    if match is None:
        return "DatasetXXX_Name"
    return f"Dataset{int(match.group(1)):03d}_{match.group(2)}"


def _missing_key_problem(file: str, key: str) -> Problem:
    examples = {
        "channel_names": '"channel_names": {"0": "T2"}',
        "labels": '"labels": {"background": 0, "tumor": 1}',
        "numTraining": '"numTraining": <number of training cases>',
        "file_ending": '"file_ending": ".nii.gz"',
    }
    return Problem(file, f"no \"{key}\" key", f"the required key \"{key}\"",
                   f"Add it, for example {examples[key]}.")


def _check_channel_names(channel_names: Any, file: str) -> list[Problem]:
    example = 'for example {"0": "T2", "1": "ADC"}'
    if not isinstance(channel_names, dict) or not channel_names:
        return [Problem(file, f"channel_names = {json.dumps(channel_names)}",
                        "a non-empty object mapping channel indices to names",
                        f"Write one entry per input channel, {example}.")]
    indices = []
    for key in channel_names:
        if not (isinstance(key, str) and key.isdigit()):
            return [Problem(file, f"channel_names key \"{key}\"", "integer keys \"0\", \"1\", ...",
                            f"Key each channel by its index, {example}.")]
        indices.append(int(key))
    expected = list(range(len(channel_names)))
    if sorted(indices) != expected:
        return [Problem(file, f"channel_names keys {sorted(indices)}", f"the keys {expected}",
                        "Number the channels 0, 1, 2, ... without gaps. The index of a channel is the "
                        "4-digit suffix of its image files (_0000, _0001, ...).")]
    return []


def _check_file_ending(file_ending: Any, file: str) -> list[Problem]:
    if isinstance(file_ending, str) and file_ending.startswith(".") and len(file_ending) > 1:
        return []
    fix = "Write the ending with its leading dot, for example \".nii.gz\"."
    if isinstance(file_ending, str) and file_ending and not file_ending.startswith("."):
        fix = f"Write \".{file_ending}\"."
    return [Problem(file, f"file_ending = {json.dumps(file_ending)}",
                    "a file ending that starts with a dot, such as \".nii.gz\"", fix)]


def _check_num_training(num_training: Any, file: str) -> list[Problem]:
    if isinstance(num_training, int) and not isinstance(num_training, bool) and num_training >= 0:
        return []
    return [Problem(file, f"numTraining = {json.dumps(num_training)}",
                    "a non-negative integer (the number of training cases)",
                    "Set numTraining to the number of cases in imagesTr.")]


def _check_labels(labels: Any, regions_class_order: Any, file: str) -> list[Problem]:
    if not isinstance(labels, dict) or not labels:
        return [Problem(file, f"labels = {json.dumps(labels)}",
                        "a non-empty object mapping label names to values",
                        'Write for example "labels": {"background": 0, "tumor": 1}.')]

    inverted = _inverted_labels_problem(labels, file)
    if inverted is not None:
        return [inverted]

    problems = _check_label_value_types(labels, file)
    problems.extend(_check_background(labels, file))
    if problems:
        return problems

    problems.extend(_check_consecutive_labels(labels, file))
    problems.extend(_check_duplicate_label_values(labels, file))
    problems.extend(_check_regions(labels, regions_class_order, file))
    return problems


def _inverted_labels_problem(labels: dict, file: str) -> Problem | None:
    # MSD and nnU-Net v1 files map values to names ({"0": "background"}), but nnU-Net v2 maps names to values.
    if not all(key.strip().isdigit() and isinstance(value, str) for key, value in labels.items()):
        return None
    swapped = ", ".join(f'"{name}": {int(key)}' for key, name in labels.items())
    return Problem(file, f"labels mapping values to names ({json.dumps(labels)})",
                   "labels mapping names to integer values",
                   f"Swap keys and values: \"labels\": {{{swapped}}}.")


def _check_label_value_types(labels: dict, file: str) -> list[Problem]:
    problems = []
    for name, value in labels.items():
        members = value if isinstance(value, (list, tuple)) else [value]
        if isinstance(value, (list, tuple)) and name == "ignore":
            problems.append(Problem(file, f"ignore label {json.dumps(value)}", "a single integer",
                                    "nnU-Net does not allow a region as ignore label, so give it one integer value."))
            continue
        if isinstance(value, (list, tuple)) and not value:
            problems.append(Problem(file, f"label \"{name}\" with an empty region []",
                                    "an integer or a non-empty list of integers",
                                    "List the label values that make up the region, or remove the entry."))
            continue
        bad = [member for member in members if _as_label_int(member) is None]
        if bad:
            problems.append(Problem(file, f"label \"{name}\" with value {json.dumps(value)}",
                                    "integer label values",
                                    "Give each label an integer value (0 for background, then 1, 2, ...)."))
    return problems


def _check_background(labels: dict, file: str) -> list[Problem]:
    if "background" not in labels:
        return [Problem(file, f"labels without \"background\" (names: {', '.join(labels)})",
                        "\"background\": 0", "Add \"background\": 0 and number the other labels from 1.")]
    background = labels["background"]
    if isinstance(background, (list, tuple)) or _as_label_int(background) != 0:
        return [Problem(file, f"\"background\": {json.dumps(background)}", "\"background\": 0",
                        "Set background to 0 and renumber the masks so that background voxels are 0.")]
    return []


def _check_consecutive_labels(labels: dict, file: str) -> list[Problem]:
    problems = []
    class_values = sorted(declared_label_values({k: v for k, v in labels.items() if k != "ignore"}))
    expected = list(range(class_values[-1] + 1))
    missing = sorted(set(expected) - set(class_values))
    if missing:
        problems.append(Problem(
            file, f"label values {class_values} (missing {missing})",
            f"consecutive integers 0, 1, ..., {len(class_values) - 1}",
            "Renumber the labels without gaps and relabel the masks to match, because nnU-Net predicts one output "
            "per value from 0 to the maximum."))

    if "ignore" in labels:
        ignore = _as_label_int(labels["ignore"])
        highest = class_values[-1]
        if ignore != highest + 1:
            problems.append(Problem(
                file, f"\"ignore\": {ignore} with the highest other label value {highest}",
                f"\"ignore\": {highest + 1} (one above all other labels)",
                "nnU-Net requires the ignore label to have the highest value, so renumber it in dataset.json "
                "and in the masks."))
    return problems


def _check_duplicate_label_values(labels: dict, file: str) -> list[Problem]:
    names_by_value: dict[int, list[str]] = {}
    for name, value in labels.items():
        if isinstance(value, (list, tuple)):
            continue
        names_by_value.setdefault(_as_label_int(value), []).append(name)
    return [
        Problem(file, f"labels {', '.join(repr(n) for n in names)} all with value {value}",
                "a distinct value per label name",
                "Give each label its own value. To train on unions of labels, declare regions as lists.")
        for value, names in sorted(names_by_value.items()) if len(names) > 1
    ]


def _check_regions(labels: dict, regions_class_order: Any, file: str) -> list[Problem]:
    regions = [name for name, value in labels.items()
               if name != "ignore" and isinstance(value, (list, tuple)) and len(value) > 1]
    if not regions:
        return []
    foreground = [name for name, value in labels.items()
                  if name not in ("ignore", "background") and declared_label_values({name: value}) != {0}]
    if not isinstance(regions_class_order, list):
        return [Problem(file, f"region labels ({', '.join(regions)}) without \"regions_class_order\"",
                        f"\"regions_class_order\" with {len(foreground)} entries",
                        "Add regions_class_order: the label value written for each region, in the order of the "
                        "labels, as nnU-Net's region-based training requires.")]
    if len(regions_class_order) != len(foreground):
        return [Problem(file, f"regions_class_order with {len(regions_class_order)} entries",
                        f"{len(foreground)} entries, one per foreground label or region",
                        "Give one value per foreground entry of labels.")]
    return []


def _as_label_int(value: Any) -> int | None:
    """Return value as int when it is an integer (or an integral float), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None
