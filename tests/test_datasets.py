"""Tests of the release converters in mricore_nnunet.datasets and of datasets_json.

Each converter test writes a tiny replica of its release layout (volumes of 6 x 6 x 3 voxels with
the release's file names and label values), converts it and checks the nnU-Net dataset it writes.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from mricore_nnunet import cli
from mricore_nnunet.datasets import TASKS, ConversionError, LabelMap, ReleaseLayoutError, sanitise_case_id
from mricore_nnunet.datasets import amos, hvsmr, isbi_prostate, liverhccseg, mmthigh, piano, qin_prostate, spider
from mricore_nnunet.datasets.common import convert_paired_folders
from mricore_nnunet.validation import check_raw_dataset, load_dataset_json

REPOSITORY = Path(__file__).resolve().parents[1]
DATASETS_JSON = REPOSITORY / "datasets_json"
PAPER_TASKS = ("PrivateBone", "PrivateMuscle", "PrivateBreast", "PIANOHand", "MMThigh", "AMOSLiver", "AMOSPancreas",
               "AMOSSpleen", "QINProstate", "ISBIProstate", "SPIDERSpine", "HVSMRChambers", "HVSMRVessels",
               "LiverHccSegTumour")

# Array shape (z, y, x); SimpleITK reports the size as (6, 6, 3).
SHAPE = (3, 6, 6)
SPACING = (0.8, 0.8, 3.0)
ORIGIN = (-10.0, 5.0, 2.5)
DIRECTION = (0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0)


def write_volume(path: Path, array: np.ndarray, origin=ORIGIN, spacing=SPACING) -> Path:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    image.SetDirection(DIRECTION)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path))
    return path


def image_array(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(300.0, 40.0, SHAPE).astype(np.float32)


def label_array(values) -> np.ndarray:
    """Return a label volume whose first voxels hold `values` in order, the rest background."""
    array = np.zeros(SHAPE, np.uint16)
    array.reshape(-1)[: len(values)] = values
    return array


def write_case(image_path: Path, label_path: Path, values, seed: int = 0) -> np.ndarray:
    """Write an image and its label; the label origin is off by rounding only, as in real headers."""
    write_volume(image_path, image_array(seed))
    labels = label_array(values)
    rounded_origin = tuple(value + 1e-5 for value in ORIGIN)
    write_volume(label_path, labels, origin=rounded_origin)
    return labels


def read_array(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def check_dataset(dataset_dir: Path, cases: set[str], labels: dict[str, int]) -> dict:
    """Check the layout, geometry, dataset.json and validation of a written dataset; return dataset.json."""
    assert (dataset_dir / "dataset.json").is_file()
    images = {path.name for path in (dataset_dir / "imagesTr").iterdir()}
    label_files = {path.name for path in (dataset_dir / "labelsTr").iterdir()}
    assert images == {f"{case}_0000.nii.gz" for case in cases}
    assert label_files == {f"{case}.nii.gz" for case in cases}

    for case in cases:
        image = sitk.ReadImage(str(dataset_dir / "imagesTr" / f"{case}_0000.nii.gz"))
        label = sitk.ReadImage(str(dataset_dir / "labelsTr" / f"{case}.nii.gz"))
        assert label.GetSize() == image.GetSize()
        assert label.GetSpacing() == image.GetSpacing()
        assert label.GetOrigin() == image.GetOrigin()
        assert label.GetDirection() == image.GetDirection()
        assert label.GetPixelID() == sitk.sitkUInt8

    content = json.loads((dataset_dir / "dataset.json").read_text(encoding="utf-8"))
    assert content["labels"] == labels
    assert content["numTraining"] == len(cases)
    assert content["file_ending"] == ".nii.gz"
    summary = check_raw_dataset(dataset_dir, num_folds=None)
    assert set(summary.case_ids) == cases
    return content


def output_label(dataset_dir: Path, case: str) -> np.ndarray:
    return read_array(dataset_dir / "labelsTr" / f"{case}.nii.gz")


# AMOS 2022

AMOS_RELEASE_LABELS = {"0": "background", "1": "spleen", "2": "right kidney", "3": "left kidney", "4": "gallbladder",
                       "5": "esophagus", "6": "liver", "7": "stomach", "8": "aorta", "9": "postcava",
                       "10": "pancreas", "11": "right adrenal gland", "12": "left adrenal gland", "13": "duodenum",
                       "14": "bladder", "15": "prostate/uterus"}
AMOS_VALUES = [1, 6, 10, 3, 6]


def make_amos_release(root: Path) -> Path:
    release = root / "amos22"
    for split, case in [("Tr", "amos_0001"), ("Tr", "amos_0507"), ("Tr", "amos_0540"), ("Va", "amos_0008"),
                        ("Va", "amos_0583")]:
        write_case(release / f"images{split}" / f"{case}.nii.gz", release / f"labels{split}" / f"{case}.nii.gz",
                   AMOS_VALUES, seed=int(case[-4:]))
    (release / "imagesTs").mkdir()
    (release / "dataset.json").write_text(json.dumps({"labels": AMOS_RELEASE_LABELS}))
    return release


@pytest.mark.parametrize("organ", ["liver", "pancreas", "spleen"])
def test_amos_organ_task(tmp_path, organ):
    release = make_amos_release(tmp_path)
    dataset_dir = amos.convert_amos(release, tmp_path / "raw", organ)

    assert dataset_dir.name == f"Dataset{amos.DEFAULT_DATASET_IDS[organ]}_{amos.TASK_NAMES[organ]}"
    check_dataset(dataset_dir, {"amos_0507", "amos_0540", "amos_0583"}, {"background": 0, organ: 1})
    expected = (label_array(AMOS_VALUES) == amos.ORGAN_VALUES[organ]).astype(np.uint8)
    np.testing.assert_array_equal(output_label(dataset_dir, "amos_0583"), expected)


def test_amos_without_validation_split(tmp_path):
    release = make_amos_release(tmp_path)
    dataset_dir = amos.convert_amos(release, tmp_path / "raw", "liver", include_validation=False)
    check_dataset(dataset_dir, {"amos_0507", "amos_0540"}, {"background": 0, "liver": 1})


def test_amos_missing_labels_folder(tmp_path):
    release = make_amos_release(tmp_path)
    for path in (release / "labelsVa").iterdir():
        path.unlink()
    (release / "labelsVa").rmdir()

    with pytest.raises(ReleaseLayoutError, match="labelsVa"):
        amos.convert_amos(release, tmp_path / "raw", "liver")
    assert not (tmp_path / "raw").exists()


def test_amos_missing_label_file(tmp_path):
    release = make_amos_release(tmp_path)
    (release / "labelsTr" / "amos_0540.nii.gz").unlink()

    with pytest.raises(ReleaseLayoutError, match=r"no label file for image\(s\) .*amos_0540\.nii\.gz"):
        amos.convert_amos(release, tmp_path / "raw", "spleen")


def test_amos_label_order_mismatch(tmp_path):
    release = make_amos_release(tmp_path)
    swapped = dict(AMOS_RELEASE_LABELS, **{"6": "stomach", "7": "liver"})
    (release / "dataset.json").write_text(json.dumps({"labels": swapped}))

    with pytest.raises(ConversionError, match="names label value 6 'stomach'"):
        amos.convert_amos(release, tmp_path / "raw", "liver")


# NCI-ISBI 2013 prostate

def write_dicom_series(folder: Path, array: np.ndarray) -> None:
    """Write `array` as one DICOM series of 2D slices that ImageSeriesReader reads back with its geometry."""
    volume = sitk.GetImageFromArray(array)
    volume.SetSpacing(SPACING)
    volume.SetOrigin(ORIGIN)
    folder.mkdir(parents=True)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for index in range(volume.GetDepth()):
        slice_image = volume[:, :, index]
        slice_image.SetMetaData("0020|000e", "1.2.826.0.1.3680043.2.1125.1.4242")
        slice_image.SetMetaData("0020|0032", "\\".join(map(str, volume.TransformIndexToPhysicalPoint((0, 0, index)))))
        slice_image.SetMetaData("0020|0037", "1\\0\\0\\0\\1\\0")
        slice_image.SetMetaData("0020|0013", str(index))
        slice_image.SetMetaData("0008|0060", "MR")
        writer.SetFileName(str(folder / f"1-{index + 1:02d}.dcm"))
        writer.Execute(slice_image)


def test_isbi_prostate_nifti_and_dicom(tmp_path):
    release = tmp_path / "isbi"
    zones = [1, 2, 2, 1]
    write_case(release / "images" / "ProstateDx-01-0001.nii.gz", release / "labels" / "Training" /
               "ProstateDx-01-0001.nrrd", zones)
    write_dicom_series(release / "images" / "Prostate3T-01-0002" / "study" / "series",
                       (image_array(2) * 10).astype(np.int16))
    label = sitk.GetImageFromArray(label_array(zones).astype(np.uint8))
    label.SetSpacing(SPACING)
    label.SetOrigin(ORIGIN)
    (release / "labels" / "Test").mkdir()
    sitk.WriteImage(label, str(release / "labels" / "Test" / "Prostate3T-01-0002.nrrd"))
    write_volume(release / "images" / "ProstateDx-01-0099.nii.gz", image_array(3))  # No label: skipped.

    dataset_dir = isbi_prostate.convert_isbi_prostate(release, tmp_path / "raw")

    check_dataset(dataset_dir, {"ProstateDx-01-0001", "Prostate3T-01-0002"}, {"background": 0, "prostate": 1})
    expected = (label_array(zones) > 0).astype(np.uint8)
    np.testing.assert_array_equal(output_label(dataset_dir, "Prostate3T-01-0002"), expected)
    dicom_image = read_array(dataset_dir / "imagesTr" / "Prostate3T-01-0002_0000.nii.gz")
    np.testing.assert_array_equal(dicom_image, (image_array(2) * 10).astype(np.int16))


def test_isbi_prostate_unexpected_label_value(tmp_path):
    release = tmp_path / "isbi"
    write_case(release / "images" / "ProstateDx-01-0001.nii.gz", release / "labels" / "ProstateDx-01-0001.nrrd",
               [1, 3])

    with pytest.raises(ConversionError, match=r"value\(s\) \[3\]"):
        isbi_prostate.convert_isbi_prostate(release, tmp_path / "raw")
    assert not any((tmp_path / "raw").iterdir())


# QIN-PROSTATE-Repeatability

def test_qin_prostate(tmp_path):
    release = tmp_path / "qin"
    for number, case in enumerate(["PCAMPMRI-00001_19980101", "PCAMPMRI-00001_19980115"]):
        write_case(release / "images" / f"{case}.nii.gz", release / "labels" / f"{case}.nii.gz", [1, 1, 0, 1],
                   seed=number)

    dataset_dir = qin_prostate.convert_qin_prostate(release, tmp_path / "raw", dataset_id=42)

    assert dataset_dir.name == "Dataset042_QINProstate"
    check_dataset(dataset_dir, {"PCAMPMRI-00001_19980101", "PCAMPMRI-00001_19980115"},
                  {"background": 0, "prostate": 1})


def test_qin_prostate_rejects_zone_labels(tmp_path):
    release = tmp_path / "qin"
    write_case(release / "images" / "case1.nii.gz", release / "labels" / "case1.nii.gz", [1, 2])

    with pytest.raises(ConversionError, match=r"value\(s\) \[2\]"):
        qin_prostate.convert_qin_prostate(release, tmp_path / "raw")


# SPIDER

SPIDER_VALUES = [1, 5, 25, 100, 201, 203, 225]


def make_spider_release(root: Path) -> Path:
    release = root / "spider"
    for number, case in enumerate(["1_t1", "1_t2", "2_t2_SPACE"]):
        write_case(release / "images" / f"{case}.mha", release / "masks" / f"{case}.mha", SPIDER_VALUES, seed=number)
    return release


def test_spider_classes(tmp_path):
    release = make_spider_release(tmp_path)
    dataset_dir = spider.convert_spider(release, tmp_path / "raw")

    labels = {"background": 0, "vertebrae": 1, "spinal_canal": 2, "intervertebral_discs": 3}
    check_dataset(dataset_dir, {"SPIDER_1_t1", "SPIDER_1_t2", "SPIDER_2_t2_SPACE"}, labels)
    np.testing.assert_array_equal(output_label(dataset_dir, "SPIDER_2_t2_SPACE"),
                                  label_array([1, 1, 1, 2, 3, 3, 3]).astype(np.uint8))


def test_spider_sequence_filter(tmp_path):
    release = make_spider_release(tmp_path)
    dataset_dir = spider.convert_spider(release, tmp_path / "raw", sequences=["t2", "t2_SPACE"])

    labels = {"background": 0, "vertebrae": 1, "spinal_canal": 2, "intervertebral_discs": 3}
    check_dataset(dataset_dir, {"SPIDER_1_t2", "SPIDER_2_t2_SPACE"}, labels)


def test_spider_missing_masks_folder(tmp_path):
    release = tmp_path / "spider"
    write_volume(release / "images" / "1_t1.mha", image_array(0))

    with pytest.raises(ReleaseLayoutError, match=r"masks/<patient>_<sequence>\.mha"):
        spider.convert_spider(release, tmp_path / "raw")


# HVSMR-2.0 and HVSMR 2016

HVSMR_VALUES = [1, 2, 3, 4, 5, 6, 7, 8]


def make_hvsmr2_release(root: Path) -> Path:
    release = root / "hvsmr2"
    for patient in (0, 12):
        write_case(release / "orig" / f"pat{patient}_orig.nii.gz", release / "orig" / f"pat{patient}_orig_seg.nii.gz",
                   HVSMR_VALUES, seed=patient)
        write_volume(release / "orig" / f"pat{patient}_orig_seg_endpoints.nii.gz", label_array([1]))
    write_volume(release / "cropped" / "pat0_cropped.nii.gz", image_array(5)[:, :5, :5])
    return release


@pytest.mark.parametrize("structures, expected_values", [
    ("chambers", [1, 2, 3, 4, 0, 0, 0, 0]),
    ("vessels", [0, 0, 0, 0, 1, 2, 3, 4]),
])
def test_hvsmr2_structure_groups(tmp_path, structures, expected_values):
    release = make_hvsmr2_release(tmp_path)
    dataset_dir = hvsmr.convert_hvsmr(release, tmp_path / "raw", structures)

    names = hvsmr.CHAMBERS if structures == "chambers" else hvsmr.VESSELS
    labels = {"background": 0, **{name: index for index, name in enumerate(names, start=1)}}
    check_dataset(dataset_dir, {"pat0", "pat12"}, labels)
    np.testing.assert_array_equal(output_label(dataset_dir, "pat12"), label_array(expected_values).astype(np.uint8))


def test_hvsmr2016_full_axial(tmp_path):
    release = tmp_path / "HVSMR2016"
    for patient in (0, 1):
        image = release / "Training dataset" / f"training_axial_full_pat{patient}.nii"
        label = release / "Ground truth" / f"training_axial_full_pat{patient}-label.nii"
        write_case(image, label, [1, 2, 2], seed=patient)
    write_volume(release / "Training dataset" / "training_axial_crop_pat0.nii", image_array(9)[:, :5, :5])

    dataset_dir = hvsmr.convert_hvsmr2016(release, tmp_path / "raw")

    check_dataset(dataset_dir, {"hvsmr2016_pat0", "hvsmr2016_pat1"},
                  {"background": 0, "myocardium": 1, "blood_pool": 2})
    np.testing.assert_array_equal(output_label(dataset_dir, "hvsmr2016_pat1"), label_array([1, 2, 2]))


# Generic layouts: MMThigh, PIANO, LiverHccSeg

def make_generic_release(root: Path, values) -> Path:
    for number, case in enumerate(["subject 01", "subject-02"]):
        write_case(root / "images" / f"{case}.nii.gz", root / "labels" / f"{case}.nii.gz", values, seed=number)
    return root


def test_mmthigh_merges_muscles(tmp_path):
    release = make_generic_release(tmp_path / "mmthigh", [1, 2, 3, 11])
    dataset_dir = mmthigh.convert_mmthigh(release, tmp_path / "raw")

    check_dataset(dataset_dir, {"subject_01", "subject-02"}, {"background": 0, "muscle": 1})
    np.testing.assert_array_equal(output_label(dataset_dir, "subject_01"), label_array([1, 1, 1, 1]))


def test_mmthigh_named_muscles(tmp_path):
    release = make_generic_release(tmp_path / "mmthigh", [3, 7, 3])
    dataset_dir = mmthigh.convert_mmthigh(release, tmp_path / "raw", label_names={"quadriceps": 7, "hamstrings": 3})

    check_dataset(dataset_dir, {"subject_01", "subject-02"}, {"background": 0, "quadriceps": 1, "hamstrings": 2})
    np.testing.assert_array_equal(output_label(dataset_dir, "subject-02"), label_array([2, 1, 2]))


def test_piano_bones(tmp_path):
    release = make_generic_release(tmp_path / "piano", [4, 9, 17])
    dataset_dir = piano.convert_piano(release, tmp_path / "raw")
    check_dataset(dataset_dir, {"subject_01", "subject-02"}, {"background": 0, "bone": 1})


def test_liverhccseg_tumour(tmp_path):
    release = make_generic_release(tmp_path / "liverhccseg", [1, 2])
    dataset_dir = liverhccseg.convert_liverhccseg(release, tmp_path / "raw")

    check_dataset(dataset_dir, {"subject_01", "subject-02"}, {"background": 0, "tumour": 1})
    np.testing.assert_array_equal(output_label(dataset_dir, "subject-02"), label_array([1, 1]))


# Shared steps

def test_paired_folders_with_label_suffix(tmp_path):
    for case in ("a", "b"):
        write_case(tmp_path / "img" / f"{case}.mha", tmp_path / "seg" / f"{case}_seg.nii.gz", [2, 2])
    dataset_dir = convert_paired_folders(tmp_path / "img", tmp_path / "seg", tmp_path / "raw", 7, "Generic",
                                         {0: 0, 2: 1}, {"background": 0, "lesion": 1}, label_suffix="_seg")
    content = check_dataset(dataset_dir, {"a", "b"}, {"background": 0, "lesion": 1})
    assert content["channel_names"] == {"0": "MRI"}


def test_existing_output_not_overwritten(tmp_path):
    release = make_generic_release(tmp_path / "piano", [1])
    first = piano.convert_piano(release, tmp_path / "raw")
    marker = first / "marker.txt"
    marker.write_text("kept")

    with pytest.raises(FileExistsError, match="already exists"):
        piano.convert_piano(release, tmp_path / "raw")
    assert marker.read_text(encoding="utf-8") == "kept"

    second = piano.convert_piano(release, tmp_path / "raw", overwrite=True)
    assert second == first
    assert not marker.exists()


def test_dataset_id_clash(tmp_path):
    release = make_generic_release(tmp_path / "piano", [1])
    (tmp_path / "raw" / "Dataset510_Other").mkdir(parents=True)

    with pytest.raises(FileExistsError, match="Dataset510_Other"):
        piano.convert_piano(release, tmp_path / "raw")


@pytest.mark.parametrize("dataset_id", [0, 1000])
def test_dataset_id_out_of_range(tmp_path, dataset_id):
    release = make_generic_release(tmp_path / "piano", [1])

    with pytest.raises(ValueError, match=f"Dataset id {dataset_id} is out of range"):
        piano.convert_piano(release, tmp_path / "raw", dataset_id=dataset_id)


def test_size_mismatch_error(tmp_path):
    release = tmp_path / "piano"
    write_volume(release / "images" / "hand.nii.gz", image_array(0))
    write_volume(release / "labels" / "hand.nii.gz", np.zeros((3, 5, 6), np.uint8))

    with pytest.raises(ConversionError, match=r"label .*hand\.nii\.gz has size \(6, 5, 3\)"):
        piano.convert_piano(release, tmp_path / "raw")
    assert not any((tmp_path / "raw").iterdir())


def test_label_takes_image_geometry(tmp_path, caplog):
    release = tmp_path / "piano"
    write_volume(release / "images" / "hand.nii.gz", image_array(0))
    write_volume(release / "labels" / "hand.nii.gz", label_array([1]).astype(np.uint8), origin=(0.0, 0.0, 0.0),
                 spacing=(1.0, 1.0, 1.0))

    with caplog.at_level("WARNING", logger="mricore_nnunet.datasets"):
        dataset_dir = piano.convert_piano(release, tmp_path / "raw")

    check_dataset(dataset_dir, {"hand"}, {"background": 0, "bone": 1})
    assert "label takes the image's geometry" in caplog.text
    assert "spacing (1.0, 1.0, 1.0)" in caplog.text


def test_float64_image_cast(tmp_path):
    release = tmp_path / "piano"
    write_volume(release / "images" / "hand.nii.gz", image_array(0).astype(np.float64))
    write_volume(release / "labels" / "hand.nii.gz", label_array([1]).astype(np.uint8))

    dataset_dir = piano.convert_piano(release, tmp_path / "raw")
    image = sitk.ReadImage(str(dataset_dir / "imagesTr" / "hand_0000.nii.gz"))
    assert image.GetPixelID() == sitk.sitkFloat32


def test_non_integer_label_error(tmp_path):
    release = tmp_path / "piano"
    write_volume(release / "images" / "hand.nii.gz", image_array(0))
    write_volume(release / "labels" / "hand.nii.gz", image_array(1))

    with pytest.raises(ConversionError, match="non-integer values"):
        piano.convert_piano(release, tmp_path / "raw")


@pytest.mark.parametrize("name, expected", [
    ("amos_0507", "amos_0507"),
    ("subject 01.v2", "subject_01_v2"),
    ("  Prostate3T-01-0002 ", "Prostate3T-01-0002"),
])
def test_sanitise_case_id(name, expected):
    assert sanitise_case_id(name) == expected


def test_sanitise_case_id_rejects_empty():
    with pytest.raises(ConversionError, match="no letters or digits"):
        sanitise_case_id("...")


def test_label_map_any_foreground():
    label_map = LabelMap.any_foreground()
    assert label_map.target(0) == 0
    assert label_map.target(17) == 1


# CLI

def test_cli_convert(tmp_path, capsys):
    release = make_generic_release(tmp_path / "liverhccseg", [1])
    out_raw = tmp_path / "raw"

    assert cli.main(["convert", "liverhccseg", str(release), "--out", str(out_raw), "--dataset-id", "77"]) == 0
    assert (out_raw / "Dataset077_LiverHccSegTumour" / "dataset.json").is_file()
    assert "Dataset077_LiverHccSegTumour" in capsys.readouterr().out

    assert cli.main(["convert", "liverhccseg", str(release), "--out", str(out_raw), "--dataset-id", "77"]) == 1
    assert "already exists" in capsys.readouterr().err


def test_cli_convert_missing_release(tmp_path, capsys):
    assert cli.main(["convert", "spider", str(tmp_path / "absent"), "--out", str(tmp_path / "raw")]) == 1
    assert "Missing folder" in capsys.readouterr().err


# datasets_json

def test_datasets_json_files_load():
    folders = sorted(path for path in DATASETS_JSON.iterdir() if path.is_dir())
    assert {path.name for path in folders} >= set(PAPER_TASKS)
    for folder in folders:
        content = load_dataset_json(folder / "dataset.json")
        assert content["name"] == folder.name
        assert content["file_ending"] == ".nii.gz"
        for key in ("description", "reference", "licence", "release"):
            assert content[key], f"{folder.name}: empty {key}"


def test_datasets_json_match_converters():
    for task, entry in TASKS.items():
        content = load_dataset_json(DATASETS_JSON / entry.metadata.name / "dataset.json")
        assert content["labels"] == dict(entry.metadata.labels), task
        assert content["channel_names"] == dict(entry.metadata.channel_names), task
        for key in ("name", "description", "reference", "licence", "release"):
            assert content[key] == getattr(entry.metadata, key), f"{task}: {key}"
        assert f"convert {task} " in content["converter"], task


def test_datasets_readme_lists_tasks():
    readme = (DATASETS_JSON / "README.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| (\w+) \|", readme, flags=re.MULTILINE)
    assert set(rows) - {"task"} == set(PAPER_TASKS)
    for entry in TASKS.values():
        if entry.metadata.name in PAPER_TASKS:
            converter_name = next(name for name, task in TASKS.items() if task is entry)
            assert f"`{converter_name}`" in readme
