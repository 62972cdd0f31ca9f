"""PNG overlays of label maps on scans, on the bundled hippocampus test cases and their reference labels."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image

from mricore_nnunet import cli
from mricore_nnunet.overlay import (DEFAULT_NUM_SLICES, label_colour, scale_factor, select_slices,
                                    write_overlays)

NUM_CASES = 2


@pytest.fixture
def cases(bundled_dataset, tmp_path):
    """Two test scans and their reference label maps, named as nnU-Net names inputs and predictions."""
    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir()
    labels.mkdir()
    for image in sorted((bundled_dataset / "imagesTs").iterdir())[:NUM_CASES]:
        case = image.name[: -len("_0000.nii.gz")]
        shutil.copy(image, images)
        shutil.copy(bundled_dataset / "labelsTs" / f"{case}.nii.gz", labels)
    # A prediction folder also contains nnU-Net's json files, which the overlay skips.
    (labels / "plans.json").write_text("{}")
    return images, labels


def test_overlays_have_size_and_colours(cases, tmp_path):
    images, labels = cases

    written = write_overlays(images, labels, tmp_path / "png")

    assert len(written) == NUM_CASES * DEFAULT_NUM_SLICES
    for label_file in sorted(labels.glob("*.nii.gz")):
        case = label_file.name[: -len(".nii.gz")]
        label_array = sitk.GetArrayFromImage(sitk.ReadImage(str(label_file)))
        pngs = sorted((tmp_path / "png").glob(f"{case}_slice*.png"))
        assert [int(p.stem.rsplit("slice", 1)[1]) for p in pngs] == select_slices(label_array)
        height, width = label_array.shape[1:]
        factor = scale_factor(height, width)
        for png in pngs:
            pixels = np.asarray(Image.open(png).convert("RGB"))
            assert pixels.shape == (height * factor, width * factor, 3)
            colours = {tuple(int(c) for c in row) for row in pixels.reshape(-1, 3)}
            slice_labels = set(np.unique(label_array[int(png.stem.rsplit("slice", 1)[1])])) - {0}
            for label in slice_labels:
                assert label_colour(label) in colours, f"{png.name} lacks the colour of label {label}"


def test_empty_label_map_gives_middle_slice(cases, tmp_path):
    images, labels = cases
    label_file = sorted(labels.glob("*.nii.gz"))[0]
    reference = sitk.ReadImage(str(label_file))
    empty = sitk.Image(reference.GetSize(), reference.GetPixelID())
    empty.CopyInformation(reference)
    sitk.WriteImage(empty, str(label_file))

    written = write_overlays(images, labels, tmp_path / "png")

    case = label_file.name[: -len(".nii.gz")]
    middle = reference.GetSize()[2] // 2
    assert [p.name for p in written if p.name.startswith(case)] == [f"{case}_slice{middle:03d}.png"]


def test_select_slices_largest_foreground():
    labels = np.zeros((6, 4, 4), dtype=np.int64)
    labels[1, :2, :2] = 1  # 4 voxels
    labels[3] = 2  # 16 voxels
    labels[4, 0, 0] = 1  # 1 voxel
    labels[5, :3, :3] = 1  # 9 voxels

    assert select_slices(labels, 3) == [1, 3, 5]
    assert select_slices(labels, 10) == [1, 3, 4, 5]
    assert select_slices(np.zeros((7, 4, 4)), 3) == [3]


def test_label_colours_distinct():
    colours = [label_colour(label) for label in range(1, 11)]
    assert len(set(colours)) == 10


def test_shape_mismatch_named(cases, tmp_path):
    images, labels = cases
    label_file = sorted(labels.glob("*.nii.gz"))[0]
    sitk.WriteImage(sitk.Image([5, 5, 5], sitk.sitkUInt8), str(label_file))

    with pytest.raises(ValueError, match=label_file.name):
        write_overlays(images, labels, tmp_path / "png")


def test_overlay_command(cases, tmp_path, capsys):
    images, labels = cases

    exit_code = cli.main(["overlay", "-i", str(images), "-s", str(labels), "-o", str(tmp_path / "png"),
                          "--slices", "2"])

    assert exit_code == 0
    assert f"Wrote {NUM_CASES * 2} overlay PNG files" in capsys.readouterr().out
    assert len(list((tmp_path / "png").glob("*.png"))) == NUM_CASES * 2
