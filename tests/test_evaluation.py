"""Tests of mricore_nnunet.evaluation against values worked out by hand on small synthetic masks."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from mricore_nnunet import cli
from mricore_nnunet.evaluation import (dice_score, evaluate_case, evaluate_folder, foreground_slices,
                                       normalized_surface_dice, summarise_repeats)
from mricore_nnunet.validation import ValidationError

SHAPE = (10, 10, 10)  # (z, y, x)


def box(z: tuple[int, int], y: tuple[int, int], x: tuple[int, int], shape=SHAPE) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[z[0]:z[1], y[0]:y[1], x[0]:x[1]] = True
    return mask


def write_label(path: Path, array: np.ndarray, spacing_xyz=(1.0, 1.0, 3.0), origin=(0.0, 0.0, 0.0)) -> Path:
    image = sitk.GetImageFromArray(array.astype(np.uint8))
    image.SetSpacing(spacing_xyz)
    image.SetOrigin(origin)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path))
    return path


# A 4x4x4 cube, and the same cube moved one voxel along z.
CUBE = box((2, 6), (2, 6), (2, 6))
CUBE_SHIFTED_Z = box((3, 7), (2, 6), (2, 6))
CUBE_SHIFTED_X = box((2, 6), (2, 6), (3, 7))
# Spacing in mm per array axis (z, y, x): 3 mm slices, 1 mm in-plane.
ANISOTROPIC = (3.0, 1.0, 1.0)


def test_dice_two_boxes():
    other = box((3, 9), (2, 6), (3, 5))  # 6 x 4 x 2 = 48 voxels
    overlap = 3 * 4 * 2  # z 3-5, y 2-5, x 3-4
    expected = 2 * overlap / (64 + 48)
    assert dice_score(CUBE, other) == pytest.approx(expected)
    assert dice_score(other, CUBE) == pytest.approx(expected)


def test_dice_empty_masks():
    empty = np.zeros(SHAPE, dtype=bool)
    assert dice_score(empty, empty) == 1.0
    assert dice_score(CUBE, empty) == 0.0
    assert dice_score(empty, CUBE) == 0.0


def test_nsd_shift_along_thick_axis():
    # Each cube has 64 - 2*2*2 = 56 surface voxels: full 4x4 layers at its first and last z, 12-voxel
    # rings in between. The shifted cube's layer at z=6 is 3 mm from the nearest surface voxel of the
    # original (its layer at z=5), beyond 2 mm; its other 40 surface voxels lie at 0 mm or 1 mm (the
    # 2x2 interior of the z=3 layer is 1 mm in-plane from the z=3 ring). The original's z=2 layer is
    # likewise the only part farther than 2 mm. NSD = (40 + 40) / (56 + 56).
    assert normalized_surface_dice(CUBE, CUBE_SHIFTED_Z, ANISOTROPIC, 2.0) == pytest.approx(80 / 112)
    assert normalized_surface_dice(CUBE_SHIFTED_Z, CUBE, ANISOTROPIC, 2.0) == pytest.approx(80 / 112)
    assert normalized_surface_dice(CUBE, CUBE_SHIFTED_Z, ANISOTROPIC, 3.0) == 1.0


def test_nsd_shift_along_thin_axis():
    assert normalized_surface_dice(CUBE, CUBE_SHIFTED_X, ANISOTROPIC, 2.0) == 1.0
    # At 0.5 mm only surface voxels that are also surface voxels of the other cube count. By the same
    # layer argument along x: the x=2 and x=6 layers (16 each) and the 2x2 interiors of the x=3 and x=5
    # layers (4 each) miss, so 56 - 16 - 4 = 36 of each cube's 56 count.
    assert normalized_surface_dice(CUBE, CUBE_SHIFTED_X, ANISOTROPIC, 0.5) == pytest.approx(72 / 112)


def test_nsd_identical_and_empty_masks():
    empty = np.zeros(SHAPE, dtype=bool)
    assert normalized_surface_dice(CUBE, CUBE, ANISOTROPIC, 0.0) == 1.0
    assert normalized_surface_dice(empty, empty, ANISOTROPIC, 2.0) == 1.0
    assert normalized_surface_dice(CUBE, empty, ANISOTROPIC, 2.0) == 0.0
    assert normalized_surface_dice(empty, CUBE, ANISOTROPIC, 2.0) == 0.0


def test_evaluate_case_excludes_ignore_voxels():
    reference = CUBE.astype(np.uint8)
    reference[8:10] = 9  # ignore label in slices 8 and 9
    prediction = CUBE.astype(np.uint8)
    prediction[8:10, 0:3, 0:3] = 1  # false positives hidden by the ignore label
    scored = evaluate_case(reference, prediction, ANISOTROPIC, [1], ignore_label=9)["labels"]["1"]
    assert scored["dice"] == 1.0
    assert scored["nsd"] == 1.0
    assert scored["prediction_voxels"] == 64
    unmasked = evaluate_case(reference, prediction, ANISOTROPIC, [1])["labels"]["1"]
    assert unmasked["dice"] == pytest.approx(2 * 64 / (64 + 64 + 18))


def test_evaluate_case_single_annotated_slice():
    # One annotated slice (z=3) in a sparse label: the cube's in-plane ring there is its surface, and
    # the prediction may differ anywhere outside the slice.
    reference = np.full(SHAPE, 9, dtype=np.uint8)
    reference[3] = CUBE[3]
    prediction = CUBE_SHIFTED_Z.astype(np.uint8)
    prediction[0] = 1
    scored = evaluate_case(reference, prediction, ANISOTROPIC, [1], ignore_label=9)["labels"]["1"]
    assert scored["reference_voxels"] == 16
    assert scored["dice"] == 1.0
    assert scored["nsd"] == 1.0


def test_evaluate_case_foreground_slices_only():
    reference = CUBE.astype(np.uint8)
    prediction = CUBE.astype(np.uint8)
    prediction[8, 0:2, 0:2] = 1  # 4 false positives in a slice without reference foreground
    whole = evaluate_case(reference, prediction, ANISOTROPIC, [1])
    assert whole["labels"]["1"]["dice"] == pytest.approx(2 * 64 / (64 + 68))
    assert whole["labels"]["1"]["nsd"] < 1.0
    restricted = evaluate_case(reference, prediction, ANISOTROPIC, [1], foreground_slices_only=True)
    assert restricted["slice_axis"] == 0
    assert restricted["evaluated_slices"] == [2, 3, 4, 5]
    assert restricted["labels"]["1"]["dice"] == 1.0
    assert restricted["labels"]["1"]["nsd"] == 1.0


def test_evaluate_case_foreground_slices_along_other_axis():
    reference = CUBE.astype(np.uint8)
    assert evaluate_case(reference, reference, ANISOTROPIC, [1], foreground_slices_only=True,
                         slice_axis=2)["evaluated_slices"] == [2, 3, 4, 5]
    assert foreground_slices(np.pad(reference, ((0, 0), (0, 0), (3, 0))), 2).tolist() == [5, 6, 7, 8]


def test_evaluate_case_nothing_to_evaluate_is_nan():
    empty = np.zeros(SHAPE, dtype=np.uint8)
    scored = evaluate_case(empty, CUBE.astype(np.uint8), ANISOTROPIC, [1], foreground_slices_only=True)
    assert scored["evaluated_slices"] == []
    assert math.isnan(scored["labels"]["1"]["dice"])
    assert math.isnan(scored["labels"]["1"]["nsd"])


def test_evaluate_case_empty_label_in_both():
    reference = CUBE.astype(np.uint8)
    scored = evaluate_case(reference, reference, ANISOTROPIC, [1, 2])["labels"]
    assert scored["2"]["dice"] == 1.0
    assert scored["2"]["nsd"] == 1.0


@pytest.fixture
def folders(tmp_path) -> tuple[Path, Path]:
    reference_dir, prediction_dir = tmp_path / "ref", tmp_path / "pred"
    two_labels = CUBE.astype(np.uint8)
    two_labels[5] = np.where(CUBE[5], 2, 0)
    write_label(reference_dir / "a.nii.gz", CUBE)
    write_label(prediction_dir / "a.nii.gz", CUBE_SHIFTED_Z)
    write_label(reference_dir / "b.nii.gz", two_labels)
    write_label(prediction_dir / "b.nii.gz", two_labels)
    (reference_dir / "notes.txt").write_text("not an image")
    return reference_dir, prediction_dir


def test_evaluate_folder_summary(folders, tmp_path):
    reference_dir, prediction_dir = folders
    output = tmp_path / "out" / "summary.json"
    summary = evaluate_folder(reference_dir, prediction_dir, [1, 2], output_file=output)

    assert [case["case"] for case in summary["per_case"]] == ["a.nii.gz", "b.nii.gz"]
    assert summary["per_case"][0]["spacing_mm"] == [3.0, 1.0, 1.0]
    # Case a: the z-shifted cube with 3 mm slices, Dice 2*48/128 and NSD 80/112; case b is exact.
    dice_a, nsd_a = 2 * 48 / 128, 80 / 112
    label_1 = summary["per_label"]["1"]
    assert label_1["dice"]["mean"] == pytest.approx((dice_a + 1.0) / 2)
    assert label_1["dice"]["std"] == pytest.approx(abs(1.0 - dice_a) / 2)
    assert label_1["nsd"]["mean"] == pytest.approx((nsd_a + 1.0) / 2)
    assert label_1["dice"]["count"] == 2
    # Label 2 is empty in both files of case a, so Dice is 1 there.
    assert summary["per_label"]["2"]["dice"]["mean"] == 1.0
    assert summary["foreground_mean"]["dice"] == pytest.approx(((dice_a + 1.0) / 2 + 1.0) / 2)

    written = json.loads(output.read_text(encoding="utf-8"))
    assert written["per_label"] == summary["per_label"]
    assert written["settings"]["nsd_tolerance_mm"] == 2.0
    assert not [p for p in output.parent.iterdir() if p.name.startswith(".")]


def test_evaluate_folder_missing_prediction(folders):
    reference_dir, prediction_dir = folders
    (prediction_dir / "b.nii.gz").unlink()
    with pytest.raises(ValidationError, match="no prediction for the reference") as error:
        evaluate_folder(reference_dir, prediction_dir, [1])
    assert str(prediction_dir / "b.nii.gz") in str(error.value)


def test_evaluate_folder_geometry_mismatch(folders):
    reference_dir, prediction_dir = folders
    write_label(prediction_dir / "b.nii.gz", CUBE, spacing_xyz=(1.0, 1.0, 1.0))
    with pytest.raises(ValidationError, match="prediction for case b.nii.gz with spacing"):
        evaluate_folder(reference_dir, prediction_dir, [1])


def test_evaluate_folder_rejects_scoring_ignore_label(folders):
    reference_dir, prediction_dir = folders
    with pytest.raises(ValidationError, match="--ignore-label"):
        evaluate_folder(reference_dir, prediction_dir, [1, 3], ignore_label=3)


def test_summarise_repeats_mean_and_std(folders):
    reference_dir, prediction_dir = folders
    summary = evaluate_folder(reference_dir, prediction_dir, [1])
    repeats = []
    for dice in (0.5, 0.7, 0.9):
        repeat = json.loads(json.dumps(summary))
        repeat["per_label"]["1"]["dice"]["mean"] = dice
        repeat["foreground_mean"]["dice"] = dice
        repeats.append(repeat)
    repeats[2]["per_label"]["1"]["nsd"]["mean"] = None  # NaN written as null is left out

    result = summarise_repeats(repeats)
    assert result["num_repeats"] == 3
    assert result["per_label"]["1"]["dice"]["mean"] == pytest.approx(0.7)
    assert result["per_label"]["1"]["dice"]["std"] == pytest.approx(np.std([0.5, 0.7, 0.9]))
    assert result["foreground_mean"]["dice"]["mean"] == pytest.approx(0.7)
    assert result["per_label"]["1"]["nsd"]["count"] == 2
    assert result["per_label"]["1"]["nsd"]["std"] == 0.0


def test_summarise_repeats_rejects_other_labels(folders):
    reference_dir, prediction_dir = folders
    with pytest.raises(ValueError, match="same labels"):
        summarise_repeats([evaluate_folder(reference_dir, prediction_dir, [1]),
                           evaluate_folder(reference_dir, prediction_dir, [1, 2])])
    with pytest.raises(ValueError, match="at least one"):
        summarise_repeats([])


def test_evaluate_cli(folders, tmp_path, capsys):
    reference_dir, prediction_dir = folders
    output = tmp_path / "summary.json"
    code = cli.main(["evaluate", "-ref", str(reference_dir), "-pred", str(prediction_dir), "-l", "1",
                     "--nsd-tolerance", "3", "--foreground-slices-only", "-o", str(output)])
    assert code == 0
    written = json.loads(output.read_text(encoding="utf-8"))
    assert written["settings"]["foreground_slices_only"] is True
    # At 3 mm the z-shifted cube is within tolerance everywhere.
    assert written["per_label"]["1"]["nsd"]["mean"] == 1.0
    assert "2 case(s)" in capsys.readouterr().out


def test_evaluate_cli_reports_missing_folder(tmp_path, capsys):
    code = cli.main(["evaluate", "-ref", str(tmp_path / "none"), "-pred", str(tmp_path), "-l", "1"])
    assert code == 1
    assert "no such folder" in capsys.readouterr().err
