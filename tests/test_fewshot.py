"""Tests of mricore_nnunet.fewshot on a copy of the bundled hippocampus MRI (40 training cases, labels 0-2)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from mricore_nnunet import cli
from mricore_nnunet.fewshot import annotated_slices, create_fewshot_dataset
from mricore_nnunet.validation import ValidationError, check_raw_dataset

SOURCE = "Dataset004_Hippocampus"
K, M, V = 3, 1, 2
IGNORE = 3  # one above the highest label, Posterior = 2


def read_array(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def file_digests(folder: Path) -> dict[str, str]:
    return {str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(folder.rglob("*")) if path.is_file()}


@pytest.fixture(scope="module")
def raw_dir(tmp_path_factory, bundled_dataset) -> Path:
    root = tmp_path_factory.mktemp("nnUNet_raw")
    shutil.copytree(bundled_dataset, root / SOURCE)
    return root


@pytest.fixture(scope="module")
def derived(raw_dir):
    before = file_digests(raw_dir / SOURCE)
    result = create_fewshot_dataset(4, K, seed=0, slices_per_volume=M, num_validation_volumes=V, raw_dir=raw_dir)
    assert file_digests(raw_dir / SOURCE) == before, "the source dataset was modified"
    return result


def test_fewshot_folder_name_and_counts(derived, raw_dir):
    assert derived.dataset_name == "Dataset504_HippocampusK3M1S0"
    assert derived.dataset_dir == raw_dir / derived.dataset_name
    assert len(derived.training_cases) == K
    assert len(derived.validation_cases) == V
    assert len(derived.test_cases) == 40 - K - V
    assert derived.axis == 0  # 1 mm isotropic: the tie goes to z
    assert derived.ignore_label == IGNORE


def test_fewshot_labels_have_m_annotated_slices(derived, raw_dir):
    source_labels = raw_dir / SOURCE / "labelsTr"
    for case in derived.training_cases + derived.validation_cases:
        label = read_array(derived.dataset_dir / "labelsTr" / f"{case}.nii.gz")
        source = read_array(source_labels / f"{case}.nii.gz")
        chosen = derived.annotated_slices[case]
        assert label.shape == source.shape
        assert len(chosen) == M
        assert annotated_slices(label, IGNORE, 0).tolist() == chosen
        assert np.array_equal(label[chosen], source[chosen])
        assert np.count_nonzero(label == IGNORE) == label.size - M * label.shape[1] * label.shape[2]
        assert np.count_nonzero(source[chosen] != 0) > 0, "the annotated slice has no foreground"


def test_fewshot_labels_keep_geometry(derived, raw_dir):
    case = derived.training_cases[0]
    label = sitk.ReadImage(str(derived.dataset_dir / "labelsTr" / f"{case}.nii.gz"))
    source = sitk.ReadImage(str(raw_dir / SOURCE / "labelsTr" / f"{case}.nii.gz"))
    assert label.GetSpacing() == source.GetSpacing()
    assert label.GetOrigin() == source.GetOrigin()
    assert label.GetDirection() == source.GetDirection()


def test_fewshot_images_are_byte_copies(derived, raw_dir):
    annotated = derived.training_cases + derived.validation_cases
    assert sorted(p.name for p in (derived.dataset_dir / "imagesTr").iterdir()) == sorted(
        f"{case}_0000.nii.gz" for case in annotated)
    for case in annotated:
        name = f"{case}_0000.nii.gz"
        assert (derived.dataset_dir / "imagesTr" / name).read_bytes() == (raw_dir / SOURCE / "imagesTr" / name).read_bytes()


def test_fewshot_test_set_has_full_labels(derived, raw_dir):
    drawn = set(derived.training_cases) | set(derived.validation_cases)
    source_cases = sorted(p.name[:-len(".nii.gz")] for p in (raw_dir / SOURCE / "labelsTr").iterdir())
    assert derived.test_cases == [case for case in source_cases if case not in drawn]
    assert sorted(p.name for p in (derived.dataset_dir / "imagesTs").iterdir()) == [
        f"{case}_0000.nii.gz" for case in derived.test_cases]
    assert sorted(p.name for p in (derived.dataset_dir / "labelsTs").iterdir()) == [
        f"{case}.nii.gz" for case in derived.test_cases]
    for case in derived.test_cases:
        copied = derived.dataset_dir / "labelsTs" / f"{case}.nii.gz"
        assert copied.read_bytes() == (raw_dir / SOURCE / "labelsTr" / f"{case}.nii.gz").read_bytes()


def test_fewshot_splits_final(derived):
    splits = json.loads((derived.dataset_dir / "splits_final.json").read_text(encoding="utf-8"))
    assert splits == [{"train": sorted(derived.training_cases), "val": sorted(derived.validation_cases)}]


def test_fewshot_dataset_json_ignore_label(derived):
    dataset_json = json.loads((derived.dataset_dir / "dataset.json").read_text(encoding="utf-8"))
    assert dataset_json["labels"] == {"background": 0, "Anterior": 1, "Posterior": 2, "ignore": IGNORE}
    assert max(dataset_json["labels"].values()) == dataset_json["labels"]["ignore"]
    assert dataset_json["numTraining"] == K + V
    summary = check_raw_dataset(derived.dataset_dir, num_folds=None)
    assert summary.label_values == {0, 1, 2, IGNORE}


def test_fewshot_draw_record(derived, raw_dir):
    draw = json.loads((derived.dataset_dir / "fewshot_draw.json").read_text(encoding="utf-8"))
    assert draw["seed"] == 0
    assert (draw["num_volumes"], draw["slices_per_volume"], draw["num_validation_volumes"]) == (K, M, V)
    assert draw["slice_axis"] == 0
    assert draw["source_dataset"] == SOURCE
    assert draw["training_cases"] == derived.training_cases
    assert draw["validation_cases"] == derived.validation_cases
    assert draw["annotated_slices"] == derived.annotated_slices
    assert len(draw["source_label_sha256"]) == 40
    label = raw_dir / SOURCE / "labelsTr" / "hippocampus_001.nii.gz"
    assert draw["source_label_sha256"]["hippocampus_001"] == hashlib.sha256(label.read_bytes()).hexdigest()


def test_fewshot_same_seed_same_draw(derived, raw_dir):
    again = create_fewshot_dataset(4, K, seed=0, slices_per_volume=M, num_validation_volumes=V, output_id=601,
                                   raw_dir=raw_dir)
    assert again.dataset_name == "Dataset601_HippocampusK3M1S0"
    assert again.training_cases == derived.training_cases
    assert again.validation_cases == derived.validation_cases
    assert again.annotated_slices == derived.annotated_slices


def test_fewshot_other_seed_other_draw(derived, raw_dir):
    other = create_fewshot_dataset(4, K, seed=1, slices_per_volume=M, num_validation_volumes=V, output_id=602,
                                   raw_dir=raw_dir)
    assert other.dataset_name == "Dataset602_HippocampusK3M1S1"
    assert (other.training_cases, other.validation_cases) != (derived.training_cases, derived.validation_cases)


def test_fewshot_rejects_existing_folder(derived, raw_dir):
    marker = derived.dataset_dir / "marker.txt"
    marker.write_text("kept")
    with pytest.raises(ValidationError, match="--overwrite"):
        create_fewshot_dataset(4, K, seed=0, slices_per_volume=M, num_validation_volumes=V, raw_dir=raw_dir)
    assert marker.read_text(encoding="utf-8") == "kept"


def test_fewshot_overwrite_replaces_folder(raw_dir):
    first = create_fewshot_dataset(4, 2, seed=5, output_id=603, raw_dir=raw_dir)
    (first.dataset_dir / "marker.txt").write_text("old")
    second = create_fewshot_dataset(4, 2, seed=5, output_id=603, raw_dir=raw_dir, overwrite=True)
    assert second.dataset_dir == first.dataset_dir
    assert not (second.dataset_dir / "marker.txt").exists()
    assert second.annotated_slices == first.annotated_slices
    assert not [p for p in raw_dir.iterdir() if p.name.startswith(".")], "a temporary folder was left behind"


def test_fewshot_rejects_too_many_volumes(raw_dir):
    with pytest.raises(ValidationError, match=r"--volumes 39 \+ --validation-volumes 2 = 41") as error:
        create_fewshot_dataset(4, 39, seed=0, num_validation_volumes=2, output_id=604, raw_dir=raw_dir)
    assert "40 training cases" in str(error.value)
    assert not list(raw_dir.glob("Dataset604_*"))


def test_fewshot_rejects_too_many_slices(raw_dir):
    with pytest.raises(ValidationError, match="--slices-per-volume 200"):
        create_fewshot_dataset(4, 2, seed=0, slices_per_volume=200, output_id=605, raw_dir=raw_dir)
    assert not list(raw_dir.glob("Dataset605_*"))


def test_fewshot_rejects_source_id(raw_dir):
    with pytest.raises(ValidationError, match="other than the source id 4"):
        create_fewshot_dataset(4, 2, seed=0, output_id=4, raw_dir=raw_dir)


def test_fewshot_rejects_id_of_other_dataset(raw_dir):
    (raw_dir / "Dataset608_Other").mkdir()
    with pytest.raises(ValidationError, match="another dataset with id 608"):
        create_fewshot_dataset(4, 2, seed=0, output_id=608, raw_dir=raw_dir)


def test_annotated_slices_along_each_axis():
    seg = np.full((4, 5, 6), 9, dtype=np.uint8)
    seg[1, 2, 3] = 0
    seg[3, 0, 5] = 1
    assert annotated_slices(seg, 9, 0).tolist() == [1, 3]
    assert annotated_slices(seg, 9, 1).tolist() == [0, 2]
    assert annotated_slices(seg, 9, 2).tolist() == [3, 5]
    assert annotated_slices(np.full((2, 2), 9), 9, 1).tolist() == []


def test_fewshot_cli(raw_dir, monkeypatch, capsys):
    monkeypatch.setenv("nnUNet_raw", str(raw_dir))
    code = cli.main(["fewshot", "-d", "4", "--volumes", "2", "--slices-per-volume", "2", "--seed", "7",
                     "--output-id", "606", "--slice-axis", "1"])
    assert code == 0
    folder = raw_dir / "Dataset606_HippocampusK2M2S7"
    draw = json.loads((folder / "fewshot_draw.json").read_text(encoding="utf-8"))
    assert draw["slice_axis"] == 1
    assert draw["num_validation_volumes"] == 2
    for case, chosen in draw["annotated_slices"].items():
        label = read_array(folder / "labelsTr" / f"{case}.nii.gz")
        assert annotated_slices(label, IGNORE, 1).tolist() == chosen
        assert len(chosen) == 2
    assert "Dataset606_HippocampusK2M2S7" in capsys.readouterr().out


def test_fewshot_cli_reports_error(raw_dir, monkeypatch, capsys):
    monkeypatch.setenv("nnUNet_raw", str(raw_dir))
    code = cli.main(["fewshot", "-d", "4", "--volumes", "50", "--seed", "0", "--output-id", "607"])
    assert code == 1
    assert "--volumes 50" in capsys.readouterr().err


def test_fewshot_full_labels_mode(raw_dir):
    result = create_fewshot_dataset(4, 2, seed=5, slices_per_volume=None, num_validation_volumes=1,
                                    output_id=520, raw_dir=raw_dir)
    assert result.dataset_name == "Dataset520_HippocampusK2MallS5"
    assert result.ignore_label is None

    dataset_json = json.loads((result.dataset_dir / "dataset.json").read_text(encoding="utf-8"))
    assert "ignore" not in dataset_json["labels"]
    for case in result.training_cases + result.validation_cases:
        derived_label = (result.dataset_dir / "labelsTr" / f"{case}.nii.gz").read_bytes()
        assert derived_label == (raw_dir / SOURCE / "labelsTr" / f"{case}.nii.gz").read_bytes()
    check_raw_dataset(result.dataset_dir, num_folds=None)
