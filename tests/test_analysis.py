"""Tests of the frozen-feature analyses: linear probe, zero-shot segmentation and set similarity."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
import torch
from sklearn.metrics import accuracy_score, balanced_accuracy_score, confusion_matrix, roc_auc_score

from mricore_nnunet.analysis import (
    centroid_cosine_distance,
    compare_image_sets,
    evaluate_zeroshot,
    frechet_distance,
    mmd_rbf,
    run_probe,
    segment_from_prompt,
)
from mricore_nnunet.analysis.io import cached_slice_embeddings
from mricore_nnunet.analysis.probe import read_label_table
from mricore_nnunet.analysis.similarity import read_image_set
from mricore_nnunet.analysis.zeroshot import cluster_label_overlap, kmeans, match_clusters_to_labels, otsu_threshold
from mricore_nnunet.checkpoints import save_encoder_checkpoint
from mricore_nnunet.cli import main
from mricore_nnunet.encoder import MRICoreEncoder
from mricore_nnunet.validation import ValidationError

SPACING = (0.9, 0.8, 2.5)
ORIGIN = (10.0, -5.0, 3.0)
DIRECTION = (0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0)


def write_image(array: np.ndarray, path: Path) -> Path:
    """Write a Z x Y x X array as NIfTI with a non-trivial geometry."""
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(SPACING)
    image.SetOrigin(ORIGIN)
    image.SetDirection(DIRECTION)
    sitk.WriteImage(image, str(path))
    return path


def checkerboard(kind: str, seed: int, shape=(3, 32, 32)) -> np.ndarray:
    """A checkerboard of 4-pixel ("fine") or 16-pixel ("coarse") squares at a random offset, plus noise."""
    rng = np.random.default_rng(seed)
    depth, height, width = shape
    side = 4 if kind == "fine" else 16
    rows, columns = np.mgrid[:height, :width] + rng.integers(0, side, size=(2, 1, 1))
    pattern = ((rows // side + columns // side) % 2).astype(np.float32)
    volume = 100.0 + 80.0 * pattern[None].repeat(depth, axis=0)
    return (volume + rng.normal(0, 5, size=shape)).astype(np.float32)


def square_volume(seed: int = 0, shape=(4, 64, 64)) -> tuple[np.ndarray, np.ndarray]:
    """A noisy dark volume with a bright 32 x 32 square in the middle of each slice, and its label map."""
    rng = np.random.default_rng(seed)
    image = rng.normal(50.0, 5.0, size=shape).astype(np.float32)
    label = np.zeros(shape, dtype=np.uint8)
    label[:, 16:48, 16:48] = 1
    image[label == 1] += 150.0
    return image, label


@pytest.fixture
def pattern_csv(tmp_path) -> Path:
    folder = tmp_path / "patterns"
    folder.mkdir()
    rows = []
    for index in range(16):
        kind = "fine" if index % 2 == 0 else "coarse"
        write_image(checkerboard(kind, seed=index), folder / f"case_{index:02d}.nii.gz")
        rows.append({"file": f"patterns/case_{index:02d}.nii.gz", "label": kind})
    csv = tmp_path / "labels.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    return csv


def test_probe_separates_checkerboards(tmp_path, pattern_csv):
    result = run_probe(pattern_csv, tmp_path / "probe", img_size=32, folds=4)
    report = result.report

    assert report["level"] == "volume"
    assert report["samples"] == 16
    assert report["classes"] == ["coarse", "fine"]
    assert report["accuracy"] >= 0.85
    assert report["chance_accuracy"] == 0.5
    for path in (result.report_json, result.report_markdown, result.confusion_png, result.predictions_csv):
        assert path.is_file()
    assert json.loads(result.report_json.read_text(encoding="utf-8"))["accuracy"] == report["accuracy"]
    assert (tmp_path / "probe" / "embeddings" / "case_00.npz").is_file()


def test_probe_metrics_match_sklearn(tmp_path, pattern_csv):
    report = run_probe(pattern_csv, tmp_path / "probe", img_size=32, folds=4).report
    predictions = pd.read_csv(tmp_path / "probe" / "predictions.csv")
    truth = predictions["label"].to_numpy()
    predicted = predictions["predicted"].to_numpy()

    assert report["accuracy"] == pytest.approx(accuracy_score(truth, predicted))
    assert report["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(truth, predicted))
    assert report["auc_ovr"] == pytest.approx(roc_auc_score(truth == "fine", predictions["probability_fine"]))
    assert report["confusion_matrix"] == confusion_matrix(truth, predicted, labels=["coarse", "fine"]).tolist()
    assert sorted(predictions["fold"].unique().tolist()) == [0, 1, 2, 3]


def test_probe_slice_level_keeps_files_in_one_fold(tmp_path, pattern_csv):
    table = pd.read_csv(pattern_csv)
    table["slice"] = ""
    table.to_csv(pattern_csv, index=False)
    report = run_probe(pattern_csv, tmp_path / "probe", img_size=32, folds=4, level="slice").report
    predictions = pd.read_csv(tmp_path / "probe" / "predictions.csv")

    assert report["level"] == "slice"
    assert report["samples"] == 16 * 3
    assert (predictions.groupby("file")["fold"].nunique() == 1).all()


def test_probe_csv_missing_column(tmp_path):
    csv = tmp_path / "labels.csv"
    csv.write_text("path,label\na.nii.gz,1\n")
    with pytest.raises(ValidationError) as caught:
        read_label_table(csv)
    assert "file" in str(caught.value)
    assert "columns ['path', 'label']" in str(caught.value)


def test_probe_csv_lists_all_missing_files(tmp_path):
    write_image(checkerboard("fine", 0), tmp_path / "present.nii.gz")
    csv = tmp_path / "labels.csv"
    csv.write_text("file,label\npresent.nii.gz,a\nmissing_1.nii.gz,a\nmissing_2.nii.gz,b\n")
    with pytest.raises(ValidationError) as caught:
        read_label_table(csv)
    message = str(caught.value)
    assert len(caught.value.problems) == 2
    assert "missing_1.nii.gz" in message
    assert "missing_2.nii.gz" in message
    assert "line 3" in message


def test_probe_csv_slice_out_of_range(tmp_path):
    write_image(checkerboard("fine", 0), tmp_path / "volume.nii.gz")
    csv = tmp_path / "labels.csv"
    csv.write_text("file,slice,label\nvolume.nii.gz,0,a\nvolume.nii.gz,3,b\n")
    with pytest.raises(ValidationError) as caught:
        read_label_table(csv)
    assert "slice 3" in str(caught.value)
    assert "from 0 to 2" in str(caught.value)


def test_probe_rejects_small_class(tmp_path, pattern_csv):
    table = pd.read_csv(pattern_csv)
    table.loc[:2, "label"] = "rare"
    table.to_csv(pattern_csv, index=False)
    with pytest.raises(ValidationError) as caught:
        run_probe(pattern_csv, tmp_path / "probe", img_size=32, folds=5)
    assert "class 'rare'" in str(caught.value)
    assert "3 samples" in str(caught.value)
    assert not (tmp_path / "probe" / "embeddings").exists()


def test_cache_recomputes_other_input_size(tmp_path):
    file = write_image(checkerboard("fine", 0), tmp_path / "volume.nii.gz")
    cache = tmp_path / "cache"
    cached_slice_embeddings([file], cache, None, "tiny", 64, "cpu", 4)
    _, used_size = cached_slice_embeddings([file], cache, None, "tiny", 32, "cpu", 4)
    assert used_size == 32
    with np.load(cache / "volume.npz") as data:
        assert int(data["img_size"]) == 32


def test_cache_follows_checkpoint(tmp_path):
    file = write_image(checkerboard("fine", 0), tmp_path / "volume.nii.gz")
    checkpoint = save_encoder_checkpoint(MRICoreEncoder("tiny", 32, 1), tmp_path / "tiny.pth")
    cache = tmp_path / "cache"
    random_embeddings = cached_slice_embeddings([file], cache, None, "tiny", 32, "cpu", 4)[0][0]
    first = cached_slice_embeddings([file], cache, checkpoint, "tiny", 32, "cpu", 4)[0][0]
    stamp = (cache / "volume.npz").stat().st_mtime_ns
    second = cached_slice_embeddings([file, file], cache, checkpoint, "tiny", 32, "cpu", 4)[0]

    assert not np.array_equal(random_embeddings, first)
    assert (cache / "volume.npz").stat().st_mtime_ns == stamp
    assert len(second) == 2
    np.testing.assert_array_equal(second[0], first)


def test_cache_rejects_case_name_collision(tmp_path):
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    first = write_image(checkerboard("fine", 0), tmp_path / "one" / "case.nii.gz")
    second = write_image(checkerboard("fine", 1), tmp_path / "two" / "case_0000.nii.gz")
    with pytest.raises(ValueError, match="same case name 'case'"):
        cached_slice_embeddings([first, second], tmp_path / "cache", None, "tiny", 32, "cpu", 4)


def test_report_files_follow_umask(tmp_path):
    from mricore_nnunet.analysis.io import write_json_atomically

    previous = os.umask(0o022)
    try:
        path = write_json_atomically(tmp_path / "report.json", {"a": 1})
    finally:
        os.umask(previous)
    assert path.stat().st_mode & 0o777 == 0o644
    assert json.loads(path.read_text(encoding="utf-8")) == {"a": 1}
    assert [child.name for child in tmp_path.iterdir()] == ["report.json"]


def test_random_encoder_embeddings_repeat(tmp_path):
    file = write_image(checkerboard("fine", 0), tmp_path / "volume.nii.gz")
    first = cached_slice_embeddings([file], tmp_path / "one", None, "tiny", 32, "cpu", 4)[0][0]
    second = cached_slice_embeddings([file], tmp_path / "two", None, "tiny", 32, "cpu", 4)[0][0]
    np.testing.assert_array_equal(first, second)


def test_cluster_matching_hand_made_case():
    clusters = np.array([[0, 0, 1, 1], [2, 2, 2, 3]])
    labels = np.array([[0, 0, 1, 1], [2, 2, 0, 0]])
    overlap = cluster_label_overlap(clusters, labels, num_clusters=5, labels=[0, 1, 2])

    assert overlap.tolist() == [[2, 0, 0], [0, 2, 0], [1, 0, 2], [1, 0, 0], [0, 0, 0]]
    # Cluster 4 is empty, so it goes to the first label (background).
    assert match_clusters_to_labels(overlap, [0, 1, 2]).tolist() == [0, 1, 2, 0, 0]


def test_cluster_matching_tie_goes_to_first_label():
    overlap = np.array([[3, 3], [1, 4]])
    assert match_clusters_to_labels(overlap, [0, 1]).tolist() == [0, 1]


def test_kmeans_finds_separated_groups():
    generator = torch.Generator().manual_seed(0)
    group_a = torch.randn(1, 30, 4, generator=generator) * 0.1
    group_b = torch.randn(1, 20, 4, generator=generator) * 0.1 + 5.0
    assignments = kmeans(torch.cat([group_a, group_b], dim=1), num_clusters=2)[0]

    assert assignments[:30].unique().numel() == 1
    assert assignments[30:].unique().numel() == 1
    assert assignments[0] != assignments[30]


def test_kmeans_rejects_too_many_clusters():
    with pytest.raises(ValueError, match="Cannot form 5 clusters from 4 points"):
        kmeans(torch.zeros(1, 4, 2), num_clusters=5)


def test_kmeans_handles_identical_points():
    assignments = kmeans(torch.ones(2, 10, 3), num_clusters=3)
    assert assignments.shape == (2, 10)


@pytest.mark.parametrize("mode", ["slice", "volume"])
def test_zeroshot_bright_square_dice(tmp_path, mode):
    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir()
    labels.mkdir()
    for seed in range(2):
        image, label = square_volume(seed)
        write_image(image, images / f"case_{seed}_0000.nii.gz")
        write_image(label, labels / f"case_{seed}.nii.gz")

    result = evaluate_zeroshot(images, labels, tmp_path / "out", clusters=(2, 8), img_size=128, mode=mode)
    dice = {row["clusters"]: row["mean_dice"] for row in result.report["results"]}

    assert dice[8] > 0.5
    assert result.report["results"][0]["slices_per_label"] == {"1": 8}
    assert result.report_json.is_file()
    assert result.plot_png.is_file()


def test_zeroshot_lists_unpaired_images(tmp_path):
    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir()
    labels.mkdir()
    image, label = square_volume()
    for case in ("a", "b", "c"):
        write_image(image, images / f"{case}_0000.nii.gz")
    write_image(label, labels / "a.nii.gz")
    with pytest.raises(ValidationError) as caught:
        evaluate_zeroshot(images, labels, tmp_path / "out", clusters=(2,), img_size=64)
    assert len(caught.value.problems) == 2


def test_zeroshot_rejects_more_clusters_than_patches(tmp_path):
    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir()
    labels.mkdir()
    image, label = square_volume()
    write_image(image, images / "a_0000.nii.gz")
    write_image(label, labels / "a.nii.gz")
    with pytest.raises(ValueError, match="exceed the 16 patches"):
        evaluate_zeroshot(images, labels, tmp_path / "out", clusters=(2, 32), img_size=64)


def test_one_click_marks_clicked_square(tmp_path):
    image, label = square_volume()
    path = write_image(image, tmp_path / "image.nii.gz")
    result = segment_from_prompt(path, tmp_path / "mask.nii.gz", point=(1, 32, 32), img_size=128,
                                 similarity_map=tmp_path / "similarity.nii.gz")

    mask_image = sitk.ReadImage(str(result.output))
    reference = sitk.ReadImage(str(path))
    assert mask_image.GetSize() == reference.GetSize()
    assert mask_image.GetSpacing() == pytest.approx(reference.GetSpacing())
    assert mask_image.GetOrigin() == pytest.approx(reference.GetOrigin())
    assert mask_image.GetDirection() == pytest.approx(reference.GetDirection())
    assert mask_image.GetPixelID() == sitk.sitkUInt8

    mask = sitk.GetArrayFromImage(mask_image)
    assert mask[1, 32, 32] == 1
    assert mask[label == 1].mean() > 0.8
    assert mask[label == 0].mean() < 0.3
    assert result.marked_voxels == int(mask.sum())
    assert sitk.ReadImage(str(result.similarity_map)).GetSize() == reference.GetSize()


def test_one_click_box_prompt(tmp_path):
    image, label = square_volume()
    path = write_image(image, tmp_path / "image.nii.gz")
    result = segment_from_prompt(path, tmp_path / "mask.nii.gz", box=(2, 20, 20, 40, 40), img_size=128)
    mask = sitk.GetArrayFromImage(sitk.ReadImage(str(result.output)))
    assert mask[2, 20:41, 20:41].mean() > 0.9


def test_one_click_rejects_point_outside(tmp_path):
    image, _ = square_volume()
    path = write_image(image, tmp_path / "image.nii.gz")
    with pytest.raises(ValueError, match="y = 64 is outside the volume"):
        segment_from_prompt(path, tmp_path / "mask.nii.gz", point=(0, 64, 10), img_size=64)
    assert not (tmp_path / "mask.nii.gz").exists()


def test_otsu_splits_two_modes():
    values = np.concatenate([np.full(100, 0.1), np.full(50, 0.9)])
    threshold = otsu_threshold(values)
    assert 0.1 <= threshold < 0.9


def test_frechet_of_set_with_itself_is_zero():
    samples = np.random.default_rng(0).normal(size=(200, 8))
    assert abs(frechet_distance(samples, samples)) < 1e-6


def test_frechet_grows_with_mean_shift():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(300, 4))
    b = rng.normal(size=(300, 4))
    distances = [frechet_distance(a, b + shift) for shift in (0.0, 0.5, 1.0, 2.0)]
    assert distances == sorted(distances)
    # Each of the 4 coordinates moves by 2, so the squared mean distance grows by about 4 * 2^2.
    assert distances[-1] - distances[0] == pytest.approx(16.0, rel=0.1)


def test_frechet_matches_1d_gaussian_formula():
    rng = np.random.default_rng(1)
    a = rng.normal(1.0, 2.0, size=(500, 1))
    b = rng.normal(-0.5, 0.5, size=(400, 1))
    std_a, std_b = a.std(ddof=1), b.std(ddof=1)
    expected = (a.mean() - b.mean()) ** 2 + (std_a - std_b) ** 2
    assert frechet_distance(a, b, offset=0.0) == pytest.approx(expected, rel=1e-9)


def test_frechet_needs_two_samples():
    with pytest.raises(ValueError, match="at least 2"):
        frechet_distance(np.zeros((1, 3)), np.zeros((5, 3)))


def test_mmd_basics():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(100, 3))
    same, bandwidth = mmd_rbf(a, a)
    near, _ = mmd_rbf(a, rng.normal(size=(100, 3)))
    far, _ = mmd_rbf(a, rng.normal(size=(100, 3)) + 3.0)

    assert same == pytest.approx(0.0, abs=1e-12)
    assert near < far
    assert bandwidth > 0


def test_mmd_hand_computed_case():
    a = np.array([[0.0], [1.0]])
    b = np.array([[3.0]])
    value, bandwidth = mmd_rbf(a, b)
    # Pairwise distances of the pooled set {0, 1, 3}: 1, 3, 2 (each twice), so the median is 2.
    assert bandwidth == 2.0
    kernel = lambda d: np.exp(-(d**2) / 8.0)  # noqa: E731
    expected = (2 + 2 * kernel(1)) / 4 + 1 - 2 * (kernel(3) + kernel(2)) / 2
    assert value == pytest.approx(expected)


def test_centroid_cosine_distance_basics():
    assert centroid_cosine_distance(np.array([[1.0, 0.0]]), np.array([[2.0, 0.0], [4.0, 0.0]])) == pytest.approx(0.0)
    assert centroid_cosine_distance(np.array([[1.0, 0.0]]), np.array([[0.0, 3.0]])) == pytest.approx(1.0)
    assert centroid_cosine_distance(np.array([[1.0, 0.0]]), np.array([[-1.0, 0.0]])) == pytest.approx(2.0)


def test_manifest_files_read(tmp_path):
    first = write_image(checkerboard("fine", 0), tmp_path / "a.nii.gz")
    second = write_image(checkerboard("fine", 1), tmp_path / "b.nii.gz")
    manifest = tmp_path / "data_manifest.json"
    manifest.write_text(json.dumps({"files": ["a.nii.gz", {"path": str(second), "volumes": []}, "a.nii.gz"]}))
    assert read_image_set(manifest) == [first.resolve(), second.resolve()]


def test_manifest_lists_missing_files(tmp_path):
    manifest = tmp_path / "data_manifest.json"
    manifest.write_text(json.dumps({"files": ["gone_1.nii.gz", "gone_2.nii.gz"]}))
    with pytest.raises(FileNotFoundError) as caught:
        read_image_set(manifest)
    assert "gone_1.nii.gz" in str(caught.value)
    assert "gone_2.nii.gz" in str(caught.value)


def test_similarity_of_set_with_itself(tmp_path):
    folder = tmp_path / "set"
    folder.mkdir()
    for seed in range(3):
        write_image(checkerboard("fine", seed), folder / f"case_{seed}.nii.gz")
    result = compare_image_sets(folder, folder, tmp_path / "out", metrics=["frechet", "mmd", "cosine"], img_size=32)
    distances = result.report["distances"]

    assert abs(distances["frechet"]) < 1e-4
    assert distances["mmd"] == pytest.approx(0.0, abs=1e-9)
    assert distances["cosine"] == pytest.approx(0.0, abs=1e-9)
    assert result.report["a"]["slices"] == 9
    assert result.report_json.is_file()


@pytest.fixture(scope="module")
def hippocampus_subset(tmp_path_factory, bundled_dataset) -> Path:
    """Four bundled hippocampus cases in nnU-Net layout, with a slice-level label CSV."""
    root = tmp_path_factory.mktemp("hippocampus")
    (root / "imagesTr").mkdir()
    (root / "labelsTr").mkdir()
    rows = []
    for image in sorted((bundled_dataset / "imagesTr").iterdir())[:4]:
        case = image.name.removesuffix("_0000.nii.gz")
        shutil.copy(image, root / "imagesTr" / image.name)
        shutil.copy(bundled_dataset / "labelsTr" / f"{case}.nii.gz", root / "labelsTr" / f"{case}.nii.gz")
        label = sitk.GetArrayFromImage(sitk.ReadImage(str(root / "labelsTr" / f"{case}.nii.gz")))
        rows += [{"file": f"imagesTr/{image.name}", "slice": z, "label": "hippocampus" if label[z].any() else "none"}
                 for z in range(label.shape[0])]
    shutil.copy(bundled_dataset / "dataset.json", root / "dataset.json")
    pd.DataFrame(rows).to_csv(root / "slices.csv", index=False)
    return root


def run_cli(capsys, *arguments: str) -> tuple[int, str, str]:
    """Run the command line in this process (a new interpreter would spend seconds importing torch)."""
    code = main(list(arguments))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_probe_hippocampus(tmp_path, capsys, hippocampus_subset):
    code, out, err = run_cli(capsys, "probe", "--csv", str(hippocampus_subset / "slices.csv"), "--folds", "2",
                        "--input-size", "64", "-o", str(tmp_path / "probe"))
    assert code == 0, err
    assert "balanced accuracy" in out
    assert "randomly initialised" in err
    report = json.loads((tmp_path / "probe" / "probe_report.json").read_text(encoding="utf-8"))
    assert report["level"] == "slice"
    assert report["files"] == 4
    assert report["img_size"] == 64
    assert (tmp_path / "probe" / "confusion_matrix.png").is_file()


def test_cli_zeroshot_hippocampus(tmp_path, capsys, hippocampus_subset):
    code, out, err = run_cli(capsys, "zeroshot", "--images", str(hippocampus_subset / "imagesTr"), "--labels",
                        str(hippocampus_subset / "labelsTr"), "--clusters", "2", "8", "--input-size", "64",
                        "-o", str(tmp_path / "zeroshot"))
    assert code == 0, err
    report = json.loads((tmp_path / "zeroshot" / "zeroshot_report.json").read_text(encoding="utf-8"))
    assert [row["clusters"] for row in report["results"]] == [2, 8]
    assert set(report["results"][0]["dice_per_label"]) == {"Anterior", "Posterior"}
    assert "Anterior" in out

    image = sorted((hippocampus_subset / "imagesTr").iterdir())[0]
    mask = tmp_path / "click.nii.gz"
    code, out, err = run_cli(capsys, "zeroshot", "--image", str(image), "--point", "17", "25", "17", "--input-size", "64", "-o", str(mask))
    assert code == 0, err
    assert sitk.ReadImage(str(mask)).GetSize() == sitk.ReadImage(str(image)).GetSize()
    assert sitk.GetArrayFromImage(sitk.ReadImage(str(mask)))[17, 25, 17] == 1


def test_cli_zeroshot_without_prompt(tmp_path, capsys, hippocampus_subset):
    image = sorted((hippocampus_subset / "imagesTr").iterdir())[0]
    code, out, err = run_cli(capsys, "zeroshot", "--image", str(image), "-o", str(tmp_path / "mask.nii.gz"))
    assert code == 1
    assert "--point Z Y X" in err
    assert "Traceback" not in err


def test_cli_similarity_hippocampus(tmp_path, capsys, hippocampus_subset):
    images = sorted((hippocampus_subset / "imagesTr").iterdir())
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"files": [str(path) for path in images[:2]]}))
    other = tmp_path / "other"
    other.mkdir()
    for path in images[2:]:
        shutil.copy(path, other / path.name)

    code, out, err = run_cli(capsys, "similarity", "--a", str(manifest), "--b", str(other), "--metric", "frechet", "mmd", "cosine",
                        "--input-size", "64", "-o", str(tmp_path / "similarity"))
    assert code == 0, err
    assert "frechet" in out
    report = json.loads((tmp_path / "similarity" / "similarity_report.json").read_text(encoding="utf-8"))
    assert report["a"]["volumes"] == 2
    assert set(report["distances"]) == {"frechet", "mmd", "cosine"}
    assert report["distances"]["frechet"] > 0
