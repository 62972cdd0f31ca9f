"""Tests of mricore_nnunet.validation on tiny datasets written to tmp_path, and on the bundled demo data."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from mricore_nnunet.validation import (DatasetSummary, Problem, ValidationError, check_image_files,
                                       check_raw_dataset, find_cases, load_dataset_json, replace_nonfinite,
                                       split_4d_channels)

DEMO_DATASET = Path(__file__).resolve().parents[1] / "mricore_nnunet" / "demo_data" / "Dataset004_Hippocampus"

# Array shape (z, y, x); SimpleITK reports the size as (x, y, z) = (5, 5, 3).
SHAPE = (3, 5, 5)
ONE_CHANNEL = {"0": "T2"}
TWO_CHANNELS = {"0": "T2", "1": "ADC"}
LABELS = {"background": 0, "lesion": 1}


def write_image(path: Path, array: np.ndarray, spacing=None, origin=None, direction=None) -> Path:
    image = sitk.GetImageFromArray(array, isVector=False)
    dimension = image.GetDimension()
    image.SetSpacing(spacing or (1.0,) * dimension)
    image.SetOrigin(origin or (0.0,) * dimension)
    if direction is not None:
        image.SetDirection(direction)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path))
    return path


def write_4d(path: Path, frames: int, shape=SHAPE) -> Path:
    volumes = [sitk.GetImageFromArray(np.full(shape, float(t), np.float32)) for t in range(frames)]
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(sitk.JoinSeries(volumes), str(path))
    return path


def image_array(seed: int = 0, shape=SHAPE) -> np.ndarray:
    return np.random.default_rng(seed).normal(100.0, 10.0, shape).astype(np.float32)


def label_array(shape=SHAPE, values=(0, 1)) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    flat = mask.reshape(-1)
    for index, value in enumerate(values):
        flat[index] = value
    return mask


def write_dataset_json(root: Path, channel_names=None, labels=None, num_training=3, file_ending=".nii.gz",
                       **extra) -> Path:
    content = {"channel_names": channel_names or ONE_CHANNEL, "labels": labels or LABELS,
               "numTraining": num_training, "file_ending": file_ending, **extra}
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset.json").write_text(json.dumps(content, indent=2))
    return root / "dataset.json"


def make_dataset(tmp_path: Path, cases=("p01", "p02", "p03"), channel_names=None, labels=None,
                 file_ending=".nii.gz") -> Path:
    """Write a valid dataset: one tiny image per channel and a mask with values 0 and 1 per case."""
    root = tmp_path / "Dataset901_Tiny"
    channel_names = channel_names or ONE_CHANNEL
    write_dataset_json(root, channel_names, labels, len(cases), file_ending)
    for number, case in enumerate(cases):
        for channel in range(len(channel_names)):
            write_image(root / "imagesTr" / f"{case}_{channel:04d}{file_ending}", image_array(number + channel))
        write_image(root / "labelsTr" / f"{case}{file_ending}", label_array())
    return root


def problems_of(error_info) -> str:
    return str(error_info.value)


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


# Problem and ValidationError

def test_problem_str_names_all_fields():
    problem = Problem("imagesTr/p01.nii.gz", "no channel suffix", "<case>_XXXX.nii.gz", "Rename it.")

    assert str(problem) == "imagesTr/p01.nii.gz: found no channel suffix; expected <case>_XXXX.nii.gz. Rename it."


def test_validation_error_lists_every_problem():
    problems = [Problem(f"file{i}", f"found{i}", f"expected{i}", f"fix{i}") for i in range(3)]

    error = ValidationError(problems, "Title line")

    lines = str(error).splitlines()
    assert lines[0] == "Title line (3 problems):"
    assert len(lines) == 4
    for i in range(3):
        assert f"file{i}: found found{i}; expected expected{i}. fix{i}" in lines[i + 1]
    assert error.problems == problems
    assert isinstance(error, ValueError)


def test_validation_error_survives_pickle():
    error = ValidationError([Problem("a", "b", "c", "d")], "Title")

    copy = pickle.loads(pickle.dumps(error))

    assert copy.problems == error.problems
    assert str(copy) == str(error)


# load_dataset_json

def test_dataset_json_trailing_comma(tmp_path):
    path = tmp_path / "dataset.json"
    path.write_text('{\n  "channel_names": {"0": "T2"},\n  "file_ending": ".nii.gz",\n}\n')

    with pytest.raises(ValidationError) as error:
        load_dataset_json(path)

    message = problems_of(error)
    assert str(path) in message
    assert "line 4, column 1" in message
    assert "Expecting property name" in message
    assert "trailing comma at the end of line 3" in message


def test_dataset_json_accepts_folder(tmp_path):
    make_dataset(tmp_path)

    data = load_dataset_json(tmp_path / "Dataset901_Tiny")

    assert data["channel_names"] == ONE_CHANNEL


def test_dataset_json_msd_format(tmp_path):
    task = tmp_path / "Task05_Prostate"
    task.mkdir()
    (task / "dataset.json").write_text(json.dumps({
        "modality": {"0": "T2", "1": "ADC"}, "labels": {"0": "background", "1": "PZ"},
        "numTraining": 1, "training": [{"image": "./imagesTr/prostate_00.nii.gz",
                                         "label": "./labelsTr/prostate_00.nii.gz"}]}))
    write_4d(task / "imagesTr" / "prostate_00.nii.gz", 2)

    with pytest.raises(ValidationError) as error:
        load_dataset_json(task / "dataset.json")

    message = problems_of(error)
    assert "Medical Segmentation Decathlon" in message
    assert f"nnUNetv2_convert_MSD_dataset -i {task}" in message
    assert len(error.value.problems) == 1


def test_dataset_json_nnunet_v1_format(tmp_path):
    task = tmp_path / "Task104_Liver"
    task.mkdir()
    (task / "dataset.json").write_text(json.dumps({
        "modality": {"0": "CT"}, "labels": {"0": "background", "1": "liver"}, "numTraining": 1,
        "training": [{"image": "./imagesTr/liver_0.nii.gz", "label": "./labelsTr/liver_0.nii.gz"}]}))
    write_image(task / "imagesTr" / "liver_0_0000.nii.gz", image_array())

    with pytest.raises(ValidationError) as error:
        load_dataset_json(task)

    message = problems_of(error)
    assert "nnU-Net v1" in message
    assert f"nnUNetv2_convert_old_nnUNet_dataset {task} Dataset104_Liver" in message


def test_dataset_json_missing_keys(tmp_path):
    path = tmp_path / "dataset.json"
    path.write_text(json.dumps({"channel_names": {"0": "T2"}, "name": "x"}))

    with pytest.raises(ValidationError) as error:
        load_dataset_json(path)

    message = problems_of(error)
    assert len(error.value.problems) == 3
    assert 'no "labels" key' in message
    assert 'no "numTraining" key' in message
    assert 'no "file_ending" key' in message


def test_dataset_json_without_background(tmp_path):
    path = write_dataset_json(tmp_path, labels={"liver": 1, "tumor": 2})

    with pytest.raises(ValidationError) as error:
        load_dataset_json(path)

    message = problems_of(error)
    assert 'labels without "background" (names: liver, tumor)' in message
    assert 'expected "background": 0' in message


def test_dataset_json_background_not_zero(tmp_path):
    path = write_dataset_json(tmp_path, labels={"background": 1, "tumor": 2})

    with pytest.raises(ValidationError) as error:
        load_dataset_json(path)

    assert '"background": 1; expected "background": 0' in problems_of(error)


def test_dataset_json_labels_not_consecutive(tmp_path):
    path = write_dataset_json(tmp_path, labels={"background": 0, "a": 1, "b": 3})

    with pytest.raises(ValidationError) as error:
        load_dataset_json(path)

    message = problems_of(error)
    assert "label values [0, 1, 3] (missing [2])" in message
    assert "consecutive integers 0, 1, ..., 2" in message


def test_dataset_json_non_integer_label(tmp_path):
    path = write_dataset_json(tmp_path, labels={"background": 0, "a": 1.5, "b": "2"})

    with pytest.raises(ValidationError) as error:
        load_dataset_json(path)

    message = problems_of(error)
    assert 'label "a" with value 1.5' in message
    assert 'label "b" with value "2"' in message


def test_dataset_json_regions_allowed(tmp_path):
    labels = {"background": 0, "whole": [1, 2, 3], "core": [2, 3], "enhancing": 3}
    path = write_dataset_json(tmp_path, labels=labels, regions_class_order=[1, 2, 3])

    data = load_dataset_json(path)

    assert data["labels"]["whole"] == [1, 2, 3]


def test_dataset_json_regions_need_class_order(tmp_path):
    labels = {"background": 0, "whole": [1, 2], "core": 2}
    path = write_dataset_json(tmp_path, labels=labels)

    with pytest.raises(ValidationError) as error:
        load_dataset_json(path)

    assert 'without "regions_class_order"' in problems_of(error)


def test_dataset_json_ignore_label_highest(tmp_path):
    path = write_dataset_json(tmp_path, labels={"background": 0, "ignore": 1, "a": 2})

    with pytest.raises(ValidationError) as error:
        load_dataset_json(path)

    message = problems_of(error)
    assert '"ignore": 1 with the highest other label value 2' in message
    assert '"ignore": 3' in message


def test_dataset_json_ignore_label_valid(tmp_path):
    path = write_dataset_json(tmp_path, labels={"background": 0, "a": 1, "ignore": 2})

    assert load_dataset_json(path)["labels"]["ignore"] == 2


def test_dataset_json_inverted_labels(tmp_path):
    path = write_dataset_json(tmp_path, labels={"0": "background", "1": "lesion"})

    with pytest.raises(ValidationError) as error:
        load_dataset_json(path)

    assert '"labels": {"background": 0, "lesion": 1}' in problems_of(error)


def test_dataset_json_duplicate_key(tmp_path):
    path = tmp_path / "dataset.json"
    path.write_text('{"channel_names": {"0": "T2"}, "labels": {"background": 0, "a": 1, "a": 2},'
                    ' "numTraining": 1, "file_ending": ".nii.gz"}')

    with pytest.raises(ValidationError) as error:
        load_dataset_json(path)

    assert 'the key "a" twice' in problems_of(error)


def test_dataset_json_byte_order_mark(tmp_path):
    path = write_dataset_json(tmp_path)
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())

    with pytest.raises(ValidationError) as error:
        load_dataset_json(path)

    assert "byte order mark" in problems_of(error)


def test_dataset_json_channel_names_gap(tmp_path):
    path = write_dataset_json(tmp_path, channel_names={"0": "T2", "2": "ADC"})

    with pytest.raises(ValidationError) as error:
        load_dataset_json(path)

    assert "channel_names keys [0, 2]; expected the keys [0, 1]" in problems_of(error)


def test_dataset_json_file_ending_without_dot(tmp_path):
    path = write_dataset_json(tmp_path, file_ending="nii.gz")

    with pytest.raises(ValidationError) as error:
        load_dataset_json(path)

    assert 'Write ".nii.gz"' in problems_of(error)


# find_cases

def test_find_cases_orders_channels(tmp_path):
    folder = tmp_path / "imagesTr"
    for case in ("b", "a"):
        for channel in (1, 0):
            write_image(folder / f"{case}_{channel:04d}.nii.gz", image_array())

    cases = find_cases(folder, TWO_CHANNELS, ".nii.gz")

    assert list(cases) == ["a", "b"]
    assert [Path(p).name for p in cases["a"]] == ["a_0000.nii.gz", "a_0001.nii.gz"]


def test_find_cases_missing_suffix(tmp_path):
    folder = tmp_path / "imagesTr"
    write_image(folder / "p01.nii.gz", image_array())
    write_image(folder / "p04_0000.nii.gz", image_array())

    with pytest.raises(ValidationError) as error:
        find_cases(folder, ONE_CHANNEL, ".nii.gz")

    message = problems_of(error)
    assert "imagesTr/p01.nii.gz: found no channel suffix" in message
    assert "<case>_XXXX.nii.gz with a 4-digit channel index" in message
    assert "Rename it to p01_0000.nii.gz" in message


def test_find_cases_double_suffix(tmp_path):
    folder = tmp_path / "imagesTr"
    write_image(folder / "p02_0000_0000.nii.gz", image_array())
    write_image(folder / "p04_0000.nii.gz", image_array())

    with pytest.raises(ValidationError) as error:
        find_cases(folder, ONE_CHANNEL, ".nii.gz")

    message = problems_of(error)
    assert "imagesTr/p02_0000_0000.nii.gz: found the channel suffix twice" in message
    assert "Rename it to p02_0000.nii.gz" in message


def test_find_cases_numbered_case_ids_allowed(tmp_path):
    folder = tmp_path / "imagesTr"
    for case in ("sub_0000", "sub_0001"):
        write_image(folder / f"{case}_0000.nii.gz", image_array())

    assert list(find_cases(folder, ONE_CHANNEL, ".nii.gz")) == ["sub_0000", "sub_0001"]


def test_find_cases_dot_separator(tmp_path):
    folder = tmp_path / "imagesTr"
    write_image(folder / "p03.0000.nii.gz", image_array())

    with pytest.raises(ValidationError) as error:
        find_cases(folder, ONE_CHANNEL, ".nii.gz")

    message = problems_of(error)
    assert "imagesTr/p03.0000.nii.gz: found '.' between case id and channel index" in message
    assert "Rename it to p03_0000.nii.gz" in message


def test_find_cases_undeclared_channel(tmp_path):
    folder = tmp_path / "imagesTr"
    write_image(folder / "p05_0000.nii.gz", image_array())
    write_image(folder / "p05_0002.nii.gz", image_array())

    with pytest.raises(ValidationError) as error:
        find_cases(folder, ONE_CHANNEL, ".nii.gz")

    message = problems_of(error)
    assert "imagesTr/p05_0002.nii.gz: found channel index 0002" in message
    assert "0000 (T2)" in message


def test_find_cases_missing_channel(tmp_path):
    folder = tmp_path / "imagesTr"
    write_image(folder / "p06_0000.nii.gz", image_array())
    write_image(folder / "p07_0000.nii.gz", image_array())
    write_image(folder / "p07_0001.nii.gz", image_array())

    with pytest.raises(ValidationError) as error:
        find_cases(folder, TWO_CHANNELS, ".nii.gz")

    message = problems_of(error)
    assert "imagesTr/p06_0001.nii.gz: found case p06 with channel files 0000 only" in message
    assert "0000 (T2), 0001 (ADC)" in message
    assert len(error.value.problems) == 1


def test_find_cases_skips_hidden_files(tmp_path):
    folder = tmp_path / "imagesTr"
    write_image(folder / "p01_0000.nii.gz", image_array())
    (folder / "._p01_0000.nii.gz").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    (folder / ".DS_Store").write_bytes(b"\x00\x00")

    cases = find_cases(folder, ONE_CHANNEL, ".nii.gz")

    assert list(cases) == ["p01"]


def test_find_cases_other_ending_only(tmp_path):
    folder = tmp_path / "imagesTr"
    write_image(folder / "p01_0000.nii", image_array())
    write_image(folder / "p02_0000.nii", image_array())

    with pytest.raises(ValidationError) as error:
        find_cases(folder, ONE_CHANNEL, ".nii.gz")

    message = problems_of(error)
    assert "no file ending in '.nii.gz' but 2 ending in '.nii'" in message
    assert 'Set "file_ending": ".nii"' in message


def test_find_cases_msd_4d_file_without_suffix(tmp_path):
    folder = tmp_path / "imagesTr"
    write_4d(folder / "prostate_00.nii.gz", 2)

    with pytest.raises(ValidationError) as error:
        find_cases(folder, TWO_CHANNELS, ".nii.gz")

    message = problems_of(error)
    assert "contains all 2 channels in its 4th dimension" in message
    assert "split_4d_channels" in message
    assert "Rename" not in message


# check_raw_dataset

def test_raw_dataset_valid_and_unchanged(tmp_path):
    root = make_dataset(tmp_path, cases=("p01", "p02", "p03", "p04", "p05"))
    before = snapshot(root)

    summary = check_raw_dataset(root)

    assert isinstance(summary, DatasetSummary)
    assert summary.case_ids == ["p01", "p02", "p03", "p04", "p05"]
    assert summary.label_values == {0, 1}
    assert summary.image_sizes["p01"] == (5, 5, 3)
    assert summary.spacings["p01"] == (1.0, 1.0, 1.0)
    assert summary.min_in_plane_size == 5
    assert summary.warnings == []
    assert snapshot(root) == before


def test_raw_dataset_unchanged_after_failure(tmp_path):
    root = make_dataset(tmp_path)
    write_image(root / "imagesTr" / "p09.nii.gz", image_array())
    before = snapshot(root)

    with pytest.raises(ValidationError):
        check_raw_dataset(root, num_folds=None)

    assert snapshot(root) == before


def test_raw_dataset_demo_hippocampus():
    summary = check_raw_dataset(DEMO_DATASET)

    assert len(summary.case_ids) == 40
    assert summary.label_values == {0, 1, 2}
    assert summary.num_channels == 1
    assert summary.min_in_plane_size is not None


def test_raw_dataset_num_training_mismatch(tmp_path):
    root = make_dataset(tmp_path)
    write_dataset_json(root, num_training=38)

    with pytest.raises(ValidationError) as error:
        check_raw_dataset(root, num_folds=None)

    message = problems_of(error)
    assert "numTraining = 38; expected 3, the number of training cases found" in message
    assert "or add the missing cases" in message


def test_raw_dataset_unpaired_images_and_labels(tmp_path):
    root = make_dataset(tmp_path)
    (root / "labelsTr" / "p02.nii.gz").unlink()
    write_image(root / "labelsTr" / "p99.nii.gz", label_array())

    with pytest.raises(ValidationError) as error:
        check_raw_dataset(root, num_folds=None)

    message = problems_of(error)
    assert "labelsTr/p02.nii.gz: found no label file for case p02" in message
    assert "labelsTr/p99.nii.gz: found a label without images" in message


def test_raw_dataset_label_with_channel_suffix(tmp_path):
    root = make_dataset(tmp_path)
    (root / "labelsTr" / "p02.nii.gz").rename(root / "labelsTr" / "p02_0000.nii.gz")

    with pytest.raises(ValidationError) as error:
        check_raw_dataset(root, num_folds=None)

    message = problems_of(error)
    assert "labelsTr/p02_0000.nii.gz: found a channel suffix on a label file" in message
    assert "Rename it to p02.nii.gz" in message
    assert len(error.value.problems) == 1


def test_raw_dataset_truncated_gzip(tmp_path):
    root = make_dataset(tmp_path)
    image_file = root / "imagesTr" / "p02_0000.nii.gz"
    data = image_file.read_bytes()
    image_file.write_bytes(data[:len(data) // 2])

    with pytest.raises(ValidationError) as error:
        check_raw_dataset(root, num_folds=None)

    message = problems_of(error)
    assert "imagesTr/p02_0000.nii.gz: found an unreadable file" in message
    assert "Compressed file ended before the end-of-stream marker was reached" in message


def test_raw_dataset_truncated_nii(tmp_path):
    root = make_dataset(tmp_path, file_ending=".nii")
    label_file = root / "labelsTr" / "p03.nii"
    data = label_file.read_bytes()
    label_file.write_bytes(data[:-20])

    with pytest.raises(ValidationError) as error:
        check_raw_dataset(root, num_folds=None)

    message = problems_of(error)
    assert "labelsTr/p03.nii: found an unreadable file (file cut short" in message
    assert f"{len(data) - 20} bytes" in message


def test_raw_dataset_garbage_file(tmp_path):
    root = make_dataset(tmp_path)
    (root / "imagesTr" / "p01_0000.nii.gz").write_bytes(b"not an image")

    with pytest.raises(ValidationError) as error:
        check_raw_dataset(root, num_folds=None)

    assert "imagesTr/p01_0000.nii.gz: found an unreadable file" in problems_of(error)


def test_raw_dataset_label_grid_mismatch(tmp_path):
    root = make_dataset(tmp_path)
    write_image(root / "imagesTr" / "p01_0000.nii.gz", image_array(shape=(2, 4, 4)), spacing=(3.5, 3.5, 5.0))
    write_image(root / "labelsTr" / "p01.nii.gz", label_array(shape=(2, 8, 8)), spacing=(0.98, 0.98, 5.0))

    with pytest.raises(ValidationError) as error:
        check_raw_dataset(root, num_folds=None)

    message = problems_of(error)
    assert "labelsTr/p01.nii.gz: found a label with size 8x8x2, spacing 0.98x0.98x5 mm" in message
    assert "expected size 4x4x2, spacing 3.5x3.5x5 mm as in the image imagesTr/p01_0000.nii.gz" in message


def test_raw_dataset_origin_direction_mismatch(tmp_path):
    root = make_dataset(tmp_path)
    flipped = (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)
    write_image(root / "labelsTr" / "p02.nii.gz", label_array(), origin=(10.0, 0.0, 0.0), direction=flipped)

    with pytest.raises(ValidationError) as error:
        check_raw_dataset(root, num_folds=None)

    message = problems_of(error)
    assert "origin 10x0x0 mm" in message
    assert "origin 0x0x0 mm" in message
    assert "direction [[-1 0 0] [0 -1 0] [0 0 1]]" in message


def test_raw_dataset_spacing_within_tolerance(tmp_path):
    root = make_dataset(tmp_path)
    write_image(root / "labelsTr" / "p02.nii.gz", label_array(), spacing=(1.0002, 1.0, 1.0))

    summary = check_raw_dataset(root, num_folds=None)

    assert "p02" in summary.case_ids


def test_raw_dataset_channel_grid_mismatch(tmp_path):
    root = make_dataset(tmp_path, channel_names=TWO_CHANNELS)
    write_image(root / "imagesTr" / "p03_0001.nii.gz", image_array(shape=(3, 5, 6)))

    with pytest.raises(ValidationError) as error:
        check_raw_dataset(root, num_folds=None)

    message = problems_of(error)
    assert "imagesTr/p03_0001.nii.gz: found a channel with size 6x5x3" in message
    assert "expected size 5x5x3 as in the image imagesTr/p03_0000.nii.gz" in message


def test_raw_dataset_undeclared_label_value(tmp_path):
    labels = {"background": 0, "a": 1, "b": 2, "c": 3, "d": 4}
    root = make_dataset(tmp_path, labels=labels)
    write_image(root / "labelsTr" / "p02.nii.gz", label_array(values=(0, 2, 3, 4, 5)))

    with pytest.raises(ValidationError) as error:
        check_raw_dataset(root, num_folds=None)

    message = problems_of(error)
    assert "labelsTr/p02.nii.gz: found label values {0, 2, 3, 4, 5}, of which {5} are not declared" in message
    assert "declared in dataset.json: {0-4}" in message
    assert len(error.value.problems) == 1


def test_raw_dataset_label_values_100_200(tmp_path):
    root = make_dataset(tmp_path, labels={"background": 0, "liver": 1, "tumor": 2})
    for case in ("p01", "p03"):
        write_image(root / "labelsTr" / f"{case}.nii.gz", label_array(values=(0, 100, 200)))

    with pytest.raises(ValidationError) as error:
        check_raw_dataset(root, num_folds=None)

    message = problems_of(error)
    assert "labelsTr/p01.nii.gz: found label values {0, 100, 200}, of which {100, 200}" in message
    assert "labelsTr/p03.nii.gz" in message
    assert "{0-2}" in message


def test_raw_dataset_non_integer_label_values(tmp_path):
    root = make_dataset(tmp_path)
    mask = label_array().astype(np.float32)
    mask[0, 0, 2] = 0.5
    write_image(root / "labelsTr" / "p01.nii.gz", mask)

    with pytest.raises(ValidationError) as error:
        check_raw_dataset(root, num_folds=None)

    message = problems_of(error)
    assert "labelsTr/p01.nii.gz: found non-integer label values {0.5}" in message
    assert "nearest-neighbour" in message


def test_raw_dataset_ignore_label_in_mask(tmp_path):
    root = make_dataset(tmp_path, labels={"background": 0, "lesion": 1, "ignore": 2})
    write_image(root / "labelsTr" / "p01.nii.gz", label_array(values=(0, 1, 2)))

    summary = check_raw_dataset(root, num_folds=None)

    assert summary.label_values == {0, 1, 2}


def test_raw_dataset_nonfinite_voxels(tmp_path):
    root = make_dataset(tmp_path)
    image = image_array()
    image[0, 0, :2] = np.nan
    image[1, 1, :3] = np.inf
    image[2, 2, 0] = -np.inf
    write_image(root / "imagesTr" / "p02_0000.nii.gz", image)

    with pytest.raises(ValidationError) as error:
        check_raw_dataset(root, num_folds=None)

    message = problems_of(error)
    assert "imagesTr/p02_0000.nii.gz: found 2 NaN and 4 Inf voxels" in message
    assert "--replace-nonfinite" in message
    assert "replace_nonfinite" in message


def test_raw_dataset_nonfinite_allowed(tmp_path):
    root = make_dataset(tmp_path)
    image = image_array()
    image[0, 0, 0] = np.nan
    write_image(root / "imagesTr" / "p02_0000.nii.gz", image)

    summary = check_raw_dataset(root, num_folds=None, allow_nonfinite=True)

    assert len(summary.warnings) == 1
    assert "1 NaN and 0 Inf voxels" in summary.warnings[0]


def test_raw_dataset_4d_msd_channels(tmp_path):
    root = make_dataset(tmp_path, channel_names=TWO_CHANNELS)
    write_4d(root / "imagesTr" / "p01_0000.nii.gz", 2)

    with pytest.raises(ValidationError) as error:
        check_raw_dataset(root, num_folds=None)

    message = problems_of(error)
    assert "imagesTr/p01_0000.nii.gz: found a 4D image of 5x5x3x2 voxels" in message
    assert "split_4d_channels('imagesTr/p01_0000.nii.gz', OUTPUT_FOLDER, 'p01', 2)" in message
    assert "nnUNetv2_convert_MSD_dataset" in message


def test_raw_dataset_4d_time_series(tmp_path):
    root = make_dataset(tmp_path)
    write_4d(root / "imagesTr" / "p02_0000.nii.gz", 30)

    with pytest.raises(ValidationError) as error:
        check_raw_dataset(root, num_folds=None)

    message = problems_of(error)
    assert "5x5x3x30 voxels whose 4th dimension (30) does not match the channel count (1)" in message
    assert "separate cases" in message
    assert "split_4d_channels" not in message


def test_raw_dataset_image_too_small(tmp_path):
    root = make_dataset(tmp_path)
    write_image(root / "imagesTr" / "p03_0000.nii.gz", image_array(shape=(10, 10, 1)))
    write_image(root / "labelsTr" / "p03.nii.gz", label_array(shape=(10, 10, 1)))

    with pytest.raises(ValidationError) as error:
        check_raw_dataset(root, num_folds=None)

    message = problems_of(error)
    assert "imagesTr/p03_0000.nii.gz: found an image of 1x10x10 voxels" in message
    assert "labelsTr/p03.nii.gz: found an image of 1x10x10 voxels" in message
    assert "at least 4 voxels along each in-plane axis" in message


def test_raw_dataset_reports_min_in_plane_size(tmp_path):
    root = make_dataset(tmp_path)
    write_image(root / "imagesTr" / "p02_0000.nii.gz", image_array(shape=(3, 4, 9)))
    write_image(root / "labelsTr" / "p02.nii.gz", label_array(shape=(3, 4, 9)))

    summary = check_raw_dataset(root, num_folds=None)

    assert summary.min_in_plane_size == 4
    assert summary.image_sizes["p02"] == (9, 4, 3)


def test_raw_dataset_fewer_cases_than_folds(tmp_path):
    root = make_dataset(tmp_path)

    with pytest.raises(ValidationError) as error:
        check_raw_dataset(root, num_folds=5)

    message = problems_of(error)
    assert "found 3 training case(s); expected at least 5 cases for 5-fold cross-validation" in message
    assert "nnUNetv2_train 901 2d all" in message
    assert "Dataset901_Tiny/splits_final.json" in message


def test_raw_dataset_folds_disabled(tmp_path):
    root = make_dataset(tmp_path)

    assert len(check_raw_dataset(root, num_folds=None).case_ids) == 3


def test_raw_dataset_lists_problems_of_all_cases(tmp_path):
    root = make_dataset(tmp_path)
    bad_values = image_array()
    bad_values[0, 0, 0] = np.nan
    write_image(root / "imagesTr" / "p01_0000.nii.gz", bad_values)
    write_image(root / "labelsTr" / "p02.nii.gz", label_array(values=(0, 7)))
    write_image(root / "imagesTr" / "p04.nii.gz", image_array())

    with pytest.raises(ValidationError) as error:
        check_raw_dataset(root, num_folds=5)

    message = problems_of(error)
    assert "imagesTr/p01_0000.nii.gz: found 1 NaN" in message
    assert "labelsTr/p02.nii.gz: found label values {0, 7}" in message
    assert "imagesTr/p04.nii.gz: found no channel suffix" in message
    assert "numTraining = 3; expected 4" in message
    assert "or remove the extra cases" in message
    assert "labelsTr/p04.nii.gz: found no label file for case p04" in message
    assert "4 training case(s)" in message
    assert len(error.value.problems) == 6


def test_raw_dataset_ignores_hidden_files(tmp_path):
    root = make_dataset(tmp_path)
    (root / "imagesTr" / "._p01_0000.nii.gz").write_bytes(b"AppleDouble")
    (root / "labelsTr" / "._p01.nii.gz").write_bytes(b"AppleDouble")

    summary = check_raw_dataset(root, num_folds=None)

    assert summary.case_ids == ["p01", "p02", "p03"]
    assert sorted(Path(p).name for p in summary.ignored_files) == ["._p01.nii.gz", "._p01_0000.nii.gz"]


def test_raw_dataset_broken_json_stops_early(tmp_path):
    root = make_dataset(tmp_path)
    (root / "dataset.json").write_text('{"channel_names": {"0": "T2"},}')

    with pytest.raises(ValidationError) as error:
        check_raw_dataset(root)

    assert len(error.value.problems) == 1
    assert "invalid JSON at line 1" in problems_of(error)


def test_raw_dataset_dataset_key(tmp_path):
    root = make_dataset(tmp_path)
    listing = {case: {"images": [f"imagesTr/{case}_0000.nii.gz"], "label": f"labelsTr/{case}.nii.gz"}
               for case in ("p01", "p02")}
    listing["p03"] = {"images": ["imagesTr/p03_0000.nii.gz"], "label": "labelsTr/missing.nii.gz"}
    write_dataset_json(root, num_training=3, dataset=listing)

    with pytest.raises(ValidationError) as error:
        check_raw_dataset(root, num_folds=None)

    message = problems_of(error)
    assert "missing.nii.gz: found no such file" in message
    assert "the file that dataset.json lists for case p03" in message
    assert len(error.value.problems) == 1


def test_raw_dataset_test_image_names_warn(tmp_path):
    root = make_dataset(tmp_path)
    write_image(root / "imagesTs" / "t01.nii.gz", image_array())

    summary = check_raw_dataset(root, num_folds=None)

    assert any(w.startswith("imagesTs/t01.nii.gz: found no channel suffix") for w in summary.warnings)


def test_raw_dataset_nonfinite_in_mha(tmp_path):
    root = make_dataset(tmp_path, file_ending=".mha")
    image = image_array()
    image[0, 0, :3] = np.nan
    write_image(root / "imagesTr" / "p01_0000.mha", image)

    with pytest.raises(ValidationError) as error:
        check_raw_dataset(root, num_folds=None)

    assert "imagesTr/p01_0000.mha: found 3 NaN and 0 Inf voxels" in problems_of(error)


def test_raw_dataset_only_background_warns(tmp_path):
    root = make_dataset(tmp_path)
    write_image(root / "labelsTr" / "p03.nii.gz", np.zeros(SHAPE, np.uint8))

    summary = check_raw_dataset(root, num_folds=None)

    assert any("labelsTr/p03.nii.gz: contains only background" in w for w in summary.warnings)


# check_image_files

def test_image_files_folder(tmp_path):
    folder = tmp_path / "input"
    write_image(folder / "a_0000.nii.gz", image_array())
    write_image(folder / "a_0001.nii.gz", image_array(1))

    cases = check_image_files(folder, 2, ".nii.gz")

    assert list(cases) == ["a"]
    assert [Path(p).name for p in cases["a"]] == ["a_0000.nii.gz", "a_0001.nii.gz"]


def test_image_files_single_file(tmp_path):
    path = write_image(tmp_path / "scan_0000.nii.gz", image_array())

    assert check_image_files([str(path)], 1, ".nii.gz") == {"scan": [str(path)]}


def test_image_files_all_problems_listed(tmp_path):
    folder = tmp_path / "input"
    write_image(folder / "nosuffix.nii.gz", image_array())
    nan_image = image_array()
    nan_image[0, 0, 0] = np.nan
    write_image(folder / "b_0000.nii.gz", nan_image)
    write_image(folder / "b_0001.nii.gz", image_array())
    write_4d(folder / "c_0000.nii.gz", 3)
    write_image(folder / "c_0001.nii.gz", image_array())
    write_image(folder / "d_0000.nii.gz", image_array())
    write_image(folder / "d_0001.nii.gz", image_array(), spacing=(2.0, 1.0, 1.0))
    truncated = write_image(folder / "e_0000.nii.gz", image_array()).read_bytes()
    (folder / "e_0000.nii.gz").write_bytes(truncated[:40])
    write_image(folder / "e_0001.nii.gz", image_array())

    with pytest.raises(ValidationError) as error:
        check_image_files(folder, 2, ".nii.gz")

    message = problems_of(error)
    assert "nosuffix.nii.gz: found no channel suffix" in message
    assert "b_0000.nii.gz: found 1 NaN and 0 Inf voxels" in message
    assert "c_0000.nii.gz: found a 4D image of 5x5x3x3 voxels whose 4th dimension (3)" in message
    assert "d_0001.nii.gz: found a channel with spacing 2x1x1 mm" in message
    assert "e_0000.nii.gz: found an unreadable file" in message
    assert len(error.value.problems) == 5


def test_image_files_wrong_ending_named_explicitly(tmp_path):
    path = write_image(tmp_path / "scan_0000.nii", image_array())

    with pytest.raises(ValidationError) as error:
        check_image_files(path, 1, ".nii.gz")

    assert "found the file ending '.nii'; expected '.nii.gz'" in problems_of(error)


def test_image_files_missing_path(tmp_path):
    with pytest.raises(ValidationError) as error:
        check_image_files([tmp_path / "absent_0000.nii.gz"], 1, ".nii.gz")

    assert "absent_0000.nii.gz: found no such file or folder" in problems_of(error)


def test_image_files_nonfinite_allowed(tmp_path):
    image = image_array()
    image[0, 0, 0] = np.inf
    path = write_image(tmp_path / "a_0000.nii.gz", image)

    assert list(check_image_files(path, 1, ".nii.gz", allow_nonfinite=True)) == ["a"]


# replace_nonfinite and split_4d_channels

def test_replace_nonfinite_writes_copy(tmp_path):
    image = image_array()
    image[0, 0, :2] = np.nan
    image[1, 1, 1] = -np.inf
    src = write_image(tmp_path / "src.nii.gz", image, spacing=(0.5, 0.7, 3.0), origin=(1.0, 2.0, 3.0))
    src_bytes = src.read_bytes()
    dst = tmp_path / "out" / "dst.nii.gz"

    counts = replace_nonfinite(src, dst)

    assert counts == (2, 1)
    assert src.read_bytes() == src_bytes
    result = sitk.ReadImage(str(dst))
    array = sitk.GetArrayFromImage(result)
    assert np.isfinite(array).all()
    assert array[0, 0, 0] == np.nanmin(image[np.isfinite(image)])
    assert result.GetSpacing() == pytest.approx((0.5, 0.7, 3.0))
    assert result.GetOrigin() == pytest.approx((1.0, 2.0, 3.0))


def test_replace_nonfinite_given_value(tmp_path):
    image = image_array()
    image[0, 0, 0] = np.inf
    src = write_image(tmp_path / "src.nii.gz", image)

    replace_nonfinite(src, tmp_path / "dst.nii.gz", value=-1.0)

    assert sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "dst.nii.gz")))[0, 0, 0] == -1.0


def test_replace_nonfinite_refuses_source(tmp_path):
    src = write_image(tmp_path / "src.nii.gz", image_array())
    src_bytes = src.read_bytes()

    with pytest.raises(ValidationError) as error:
        replace_nonfinite(src, tmp_path / "." / "src.nii.gz")

    assert "the source file as output path" in problems_of(error)
    assert src.read_bytes() == src_bytes


def test_split_4d_channels(tmp_path):
    src = write_4d(tmp_path / "prostate_00.nii.gz", 2)
    image = sitk.ReadImage(str(src))
    image.SetSpacing((0.6, 0.6, 3.6, 1.0))
    image.SetOrigin((5.0, 6.0, 7.0, 0.0))
    sitk.WriteImage(image, str(src))

    outputs = split_4d_channels(src, tmp_path / "imagesTr", "prostate_00", 2)

    assert [Path(p).name for p in outputs] == ["prostate_00_0000.nii.gz", "prostate_00_0001.nii.gz"]
    second = sitk.ReadImage(outputs[1])
    assert second.GetDimension() == 3
    assert second.GetSize() == (5, 5, 3)
    assert second.GetSpacing() == pytest.approx((0.6, 0.6, 3.6))
    assert second.GetOrigin() == pytest.approx((5.0, 6.0, 7.0))
    assert np.all(sitk.GetArrayFromImage(second) == 1.0)


def test_split_4d_channels_count_mismatch(tmp_path):
    src = write_4d(tmp_path / "cine.nii.gz", 30)

    with pytest.raises(ValidationError) as error:
        split_4d_channels(src, tmp_path / "out", "cine", 1)

    message = problems_of(error)
    assert "30 entries in the 4th dimension" in message
    assert "1 entries, one per channel" in message
    assert not (tmp_path / "out").exists()


def test_split_4d_channels_rejects_3d(tmp_path):
    src = write_image(tmp_path / "p01.nii.gz", image_array())

    with pytest.raises(ValidationError) as error:
        split_4d_channels(src, tmp_path / "out", "p01", 1)

    assert "found a 3D image of 5x5x3 voxels" in problems_of(error)
