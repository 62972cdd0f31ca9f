"""`mricore_nnunet predict` with a tiny trained MRICoreTrainer model on the bundled hippocampus MRI.

One module-scoped model is planned and trained once (fold 0, one short epoch). The tests compare our
predictions with `nnUNetv2_predict`, resume a killed run, share the model as a zip, and check that bad
inputs are reported before any model loads.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from mricore_nnunet import cli, inference
from mricore_nnunet.validation import ValidationError

# Five cases are the minimum for nnU-Net's 5-fold split, of which fold 0 is trained.
NUM_TRAINING_CASES = 5
NUM_TEST_CASES = 2
INPUT_SIZE = 64
DATASET_ID = "4"
DATASET_NAME = "Dataset004_Hippocampus"
MODEL_IDENTIFIER = "MRICoreTrainer__MRICorePlans__2d"
FILE_ENDING = ".nii.gz"


def run(arguments: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    completed = subprocess.run(arguments, env=env, capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=900)
    if completed.returncode != 0:
        raise AssertionError(
            f"{' '.join(arguments)} exited with {completed.returncode}\n--- stdout ---\n{completed.stdout[-4000:]}"
            f"\n--- stderr ---\n{completed.stderr[-4000:]}"
        )
    return completed


def console_script(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


def case_id(image_file: Path) -> str:
    return image_file.name[: -len("_0000" + FILE_ENDING)]


def read_array(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def assert_same_segmentation(expected: Path, actual: Path) -> None:
    assert actual.is_file(), f"{actual} was not written"
    assert np.array_equal(read_array(expected), read_array(actual)), f"{actual} differs from {expected}"


def assert_nearly_same_segmentation(expected: Path, actual: Path, max_fraction: float = 1e-3) -> None:
    """Compare segmentations that may differ where two labels' logits tie to float rounding."""
    assert actual.is_file(), f"{actual} was not written"
    differing = np.mean(read_array(expected) != read_array(actual))
    assert differing <= max_fraction, f"{actual} differs from {expected} in {differing:.2%} of voxels"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, nnunet_workspace):
    """Raw data of 5 training cases, 2 test images, a tiny encoder checkpoint and nnU-Net's environment."""
    return nnunet_workspace(tmp_path_factory.mktemp("inference"), NUM_TRAINING_CASES, NUM_TEST_CASES, INPUT_SIZE)


@pytest.fixture(scope="module")
def trained(workspace):
    """Plan with our planner and train fold 0 of MRICoreTrainer through nnUNetv2_train."""
    env = workspace["env"]
    run([console_script("mricore_nnunet"), "plan", "-d", DATASET_ID, "--checkpoint", str(workspace["checkpoint"]),
         "--input-size", str(INPUT_SIZE), "--batch-size", "4"], env)
    run([console_script("nnUNetv2_train"), DATASET_ID, "2d", "0", "-tr", "MRICoreTrainer", "-p", "MRICorePlans",
         "-device", "cpu"], env)
    model_folder = workspace["root"] / "nnUNet_results" / DATASET_NAME / MODEL_IDENTIFIER
    return dict(workspace, model_folder=model_folder)


@pytest.fixture(scope="module")
def nnunet_predictions(trained) -> Path:
    """nnU-Net's own prediction of the test images, the reference for ours."""
    output = trained["root"] / "predictions_nnunet"
    run([console_script("nnUNetv2_predict"), "-i", str(trained["test_images"]), "-o", str(output), "-d", DATASET_ID,
         "-c", "2d", "-f", "0", "-tr", "MRICoreTrainer", "-p", "MRICorePlans", "-device", "cpu",
         "-npp", "1", "-nps", "1"], trained["env"])
    return output


def test_predict_matches_nnunet_predict(trained, nnunet_predictions):
    # One tile per network call is nnUNetv2_predict's own computation, so the output is identical.
    output = trained["root"] / "predictions_ours"
    completed = run([console_script("mricore_nnunet"), "predict", "-i", str(trained["test_images"]), "-o", str(output),
                     "-m", str(trained["model_folder"]), "--device", "cpu", "--tile-batch-size", "1"], trained["env"])

    assert "Device: cpu" in completed.stdout
    assert "much slower than on a GPU" in completed.stdout
    assert f"Predicted {NUM_TEST_CASES} case(s)" in completed.stdout
    assert "Predicting" in completed.stderr  # the tqdm progress bar
    for image_file in sorted(trained["test_images"].iterdir()):
        prediction_file = output / f"{case_id(image_file)}{FILE_ENDING}"
        assert_same_segmentation(nnunet_predictions / prediction_file.name, prediction_file)
        image = sitk.ReadImage(str(image_file))
        prediction = sitk.ReadImage(str(prediction_file))
        assert prediction.GetSize() == image.GetSize()
        assert prediction.GetSpacing() == image.GetSpacing()
        assert prediction.GetOrigin() == image.GetOrigin()
        assert prediction.GetDirection() == image.GetDirection()
    assert (output / "plans.json").is_file()
    assert (output / "dataset.json").is_file()


def test_default_tile_batching_nearly_matches_nnunet(trained, nnunet_predictions):
    """Batched tiles change float rounding only, so only near-tie voxels (at most 0.1 %) differ from nnU-Net's output."""
    output = trained["root"] / "predictions_batched"
    run([console_script("mricore_nnunet"), "predict", "-i", str(trained["test_images"]), "-o", str(output),
         "-m", str(trained["model_folder"]), "--device", "cpu"], trained["env"])
    for image_file in sorted(trained["test_images"].iterdir()):
        name = f"{case_id(image_file)}{FILE_ENDING}"
        assert_nearly_same_segmentation(nnunet_predictions / name, output / name)


def test_tile_batching_matches_nnunet_logits(trained, monkeypatch):
    """Tiles grouped into batches give nnU-Net's logits: exactly with batch 1, to rounding with more."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    for name, value in trained["env"].items():
        monkeypatch.setenv(name, value)
    device = torch.device("cpu")
    reference = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=True, device=device,
                                perform_everything_on_device=False, allow_tqdm=False)
    reference.initialize_from_trained_model_folder(str(trained["model_folder"]), [0], inference.CHECKPOINT_NAME)
    # Slices larger than the 64 px patch, so each slice has several overlapping tiles.
    generator = torch.Generator().manual_seed(0)
    image = torch.randn(1, 5, 100, 90, generator=generator)
    expected = reference.predict_sliding_window_return_logits(image)
    assert len(reference._internal_get_sliding_window_slicers(image.shape[1:])) > 5 * 2

    for tile_batch_size in (1, 3, 64):
        predictor = inference.load_predictor(trained["model_folder"], [0], device, tile_batch_size=tile_batch_size)
        logits = predictor.predict_sliding_window_return_logits(image)
        assert logits.shape == expected.shape
        if tile_batch_size == 1:
            assert torch.equal(logits, expected)
        else:
            torch.testing.assert_close(logits.float(), expected.float(), atol=2e-2, rtol=1e-2)
            # Half-precision accumulation can flip a near tie; anything more is a real difference.
            assert (logits.argmax(0) == expected.argmax(0)).float().mean() > 0.999


def test_tile_batch_size_must_be_positive(trained, tmp_path, capsys):
    with pytest.raises(ValueError, match="tile_batch_size must be at least 1"):
        inference.load_predictor(trained["model_folder"], [0], torch.device("cpu"), tile_batch_size=0)

    output = tmp_path / "out"
    with pytest.raises(ValueError, match="tile_batch_size must be at least 1, got 0"):
        inference.predict(trained["test_images"], output, trained["model_folder"], tile_batch_size=0)
    assert not output.exists()

    with pytest.raises(SystemExit):
        cli.main(["predict", "-i", str(trained["test_images"]), "-o", str(output), "-m", str(trained["model_folder"]),
                  "--tile-batch-size", "0"])
    assert "--tile-batch-size: invalid value '0'" in capsys.readouterr().err
    assert not output.exists()


def test_predict_single_file(trained, nnunet_predictions, tmp_path):
    image_file = sorted(trained["test_images"].iterdir())[0]
    result = inference.predict(image_file, tmp_path / "out", trained["model_folder"], device="cpu", progress=False,
                               save_probabilities=True, tile_batch_size=1)

    case = case_id(image_file)
    assert result.predicted == [case]
    assert_same_segmentation(nnunet_predictions / f"{case}{FILE_ENDING}", tmp_path / "out" / f"{case}{FILE_ENDING}")
    probabilities = np.load(tmp_path / "out" / f"{case}.npz")["probabilities"]
    assert probabilities.shape[0] == 3  # background and the two hippocampus labels
    assert (tmp_path / "out" / f"{case}.pkl").is_file()


def test_predict_resumes_killed_run(trained, tmp_path):
    output = tmp_path / "out"
    first = inference.predict(trained["test_images"], output, trained["model_folder"], device="cpu", progress=False)
    finished, removed = first.predicted
    finished_file = output / f"{finished}{FILE_ENDING}"
    finished_mtime = finished_file.stat().st_mtime_ns
    # What a kill leaves: one case without output and a half-written temporary file.
    (output / f"{removed}{FILE_ENDING}").unlink()
    leftover = output / f"{inference.TEMPORARY_PREFIX}{removed}{FILE_ENDING}"
    leftover.write_bytes(b"half-written")
    time.sleep(0.05)

    second = inference.predict(trained["test_images"], output, trained["model_folder"], device="cpu", progress=False)

    assert second.predicted == [removed]
    assert second.skipped == [finished]
    assert finished_file.stat().st_mtime_ns == finished_mtime
    assert (output / f"{removed}{FILE_ENDING}").is_file()
    assert not [p.name for p in output.iterdir() if p.name.startswith(inference.TEMPORARY_PREFIX)]


def test_interrupted_case_leaves_no_temporary(trained, tmp_path, monkeypatch):
    from nnunetv2.inference import export_prediction

    def write_then_interrupt(*args, **kwargs):
        output_truncated = args[5]
        Path(output_truncated + FILE_ENDING).write_bytes(b"half-written")
        raise KeyboardInterrupt

    monkeypatch.setattr(export_prediction, "export_prediction_from_logits", write_then_interrupt)
    output = tmp_path / "out"
    image_file = sorted(trained["test_images"].iterdir())[0]

    with pytest.raises(KeyboardInterrupt):
        inference.predict(image_file, output, trained["model_folder"], device="cpu", progress=False)

    assert sorted(p.name for p in output.iterdir()) == ["dataset.json", "plans.json"]


def test_predict_overwrite_predicts_again(trained, tmp_path):
    output = tmp_path / "out"
    image_file = sorted(trained["test_images"].iterdir())[0]
    inference.predict(image_file, output, trained["model_folder"], device="cpu", progress=False)

    again = inference.predict(image_file, output, trained["model_folder"], device="cpu", progress=False, overwrite=True)

    assert again.predicted == [case_id(image_file)]
    assert again.skipped == []


def test_predict_replaces_nonfinite_copy(trained, tmp_path):
    source = sorted(trained["test_images"].iterdir())[0]
    image = sitk.Cast(sitk.ReadImage(str(source)), sitk.sitkFloat32)
    array = sitk.GetArrayFromImage(image)
    array[0, 0, :3] = np.nan
    damaged = sitk.GetImageFromArray(array)
    damaged.CopyInformation(image)
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    sitk.WriteImage(damaged, str(inputs / source.name))
    original_bytes = (inputs / source.name).read_bytes()

    with pytest.raises(ValidationError, match="NaN"):
        inference.predict(inputs, tmp_path / "rejected", trained["model_folder"], device="cpu", progress=False)
    result = inference.predict(inputs, tmp_path / "out", trained["model_folder"], device="cpu", progress=False,
                               replace_nonfinite=True)

    assert result.predicted == [case_id(source)]
    assert (tmp_path / "out" / f"{case_id(source)}{FILE_ENDING}").is_file()
    assert (inputs / source.name).read_bytes() == original_bytes
    assert sorted(p.name for p in inputs.iterdir()) == [source.name]


def test_zip_export_install_round_trip(trained, nnunet_predictions, tmp_path):
    archive = tmp_path / "model.zip"
    run([console_script("nnUNetv2_export_model_to_zip"), "-d", DATASET_ID, "-o", str(archive), "-c", "2d",
         "-tr", "MRICoreTrainer", "-p", "MRICorePlans", "-f", "0"], trained["env"])
    fresh_results = tmp_path / "fresh_nnUNet_results"
    fresh_results.mkdir()
    # The receiving lab needs nnUNet_results only: no raw data, no preprocessed data, no encoder checkpoint.
    receiving_env = {name: value for name, value in trained["env"].items()
                     if name not in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_extTrainer")}
    receiving_env["nnUNet_results"] = str(fresh_results)
    run([console_script("nnUNetv2_install_pretrained_model_from_zip"), str(archive)], receiving_env)

    output = tmp_path / "predictions"
    run([console_script("mricore_nnunet"), "predict", "-i", str(trained["test_images"]), "-o", str(output),
         "-d", DATASET_ID, "--device", "cpu", "--tile-batch-size", "1"], receiving_env)

    assert (fresh_results / DATASET_NAME / MODEL_IDENTIFIER / "fold_0" / "checkpoint_final.pth").is_file()
    for image_file in sorted(trained["test_images"].iterdir()):
        name = f"{case_id(image_file)}{FILE_ENDING}"
        assert_same_segmentation(nnunet_predictions / name, output / name)


# Input checks. These use a model folder with an empty checkpoint and fail the test if a model loads.


@pytest.fixture
def unloadable_model(tmp_path, bundled_dataset, monkeypatch) -> Path:
    folder = tmp_path / "results" / DATASET_NAME / MODEL_IDENTIFIER
    (folder / "fold_0").mkdir(parents=True)
    shutil.copy(bundled_dataset / "dataset.json", folder / "dataset.json")
    (folder / "plans.json").write_text("{}")
    (folder / "fold_0" / inference.CHECKPOINT_NAME).write_bytes(b"")

    def fail_if_called(*args, **kwargs):
        raise AssertionError("the model was loaded although the inputs are invalid")

    monkeypatch.setattr(inference, "load_predictor", fail_if_called)
    return folder


def write_wrong_channel_suffix(folder: Path, source: Path) -> Path:
    target = folder / f"{case_id(source)}_0001{FILE_ENDING}"
    shutil.copy(source, target)
    return target


def write_truncated(folder: Path, source: Path) -> Path:
    target = folder / source.name
    data = source.read_bytes()
    target.write_bytes(data[: len(data) // 2])
    return target


def write_nan_voxels(folder: Path, source: Path) -> Path:
    image = sitk.Cast(sitk.ReadImage(str(source)), sitk.sitkFloat32)
    array = sitk.GetArrayFromImage(image)
    array[1, 1, 1] = np.nan
    damaged = sitk.GetImageFromArray(array)
    damaged.CopyInformation(image)
    target = folder / source.name
    sitk.WriteImage(damaged, str(target))
    return target


def write_4d(folder: Path, source: Path) -> Path:
    image = sitk.ReadImage(str(source))
    target = folder / source.name
    sitk.WriteImage(sitk.JoinSeries([image, image]), str(target))
    return target


BAD_INPUTS = {
    "wrong_channel_suffix": (write_wrong_channel_suffix, "channel index 0001"),
    "truncated": (write_truncated, "unreadable file"),
    "nan_voxels": (write_nan_voxels, "NaN"),
    "4d": (write_4d, "4D image"),
}


@pytest.mark.parametrize("kind", sorted(BAD_INPUTS))
def test_bad_input_rejected_before_loading(kind, unloadable_model, bundled_dataset, tmp_path):
    write, expected_text = BAD_INPUTS[kind]
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    source = sorted((bundled_dataset / "imagesTs").iterdir())[0]
    bad_file = write(inputs, source)

    with pytest.raises(ValidationError) as caught:
        inference.predict(inputs, tmp_path / "out", unloadable_model, device="cpu", progress=False)

    message = str(caught.value)
    assert bad_file.name in message
    assert expected_text in message
    assert not (tmp_path / "out").exists()


def test_bad_inputs_listed_in_one_error(unloadable_model, bundled_dataset, tmp_path):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    sources = sorted((bundled_dataset / "imagesTs").iterdir())
    bad_files = [write(inputs, source) for (write, _), source in zip(BAD_INPUTS.values(), sources)]
    (inputs / f"._{sources[-1].name}").write_bytes(b"macOS resource fork")

    with pytest.raises(ValidationError) as caught:
        inference.predict(inputs, tmp_path / "out", unloadable_model, device="cpu", progress=False)

    message = str(caught.value)
    for bad_file in bad_files:
        assert bad_file.name in message
    assert f"._{sources[-1].name}" not in message


def test_cli_reports_bad_input(unloadable_model, bundled_dataset, tmp_path, capsys):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    bad_file = write_truncated(inputs, sorted((bundled_dataset / "imagesTs").iterdir())[0])

    exit_code = cli.main(["predict", "-i", str(inputs), "-o", str(tmp_path / "out"), "-m", str(unloadable_model),
                          "--device", "cpu"])

    captured = capsys.readouterr()
    assert exit_code == 1
    assert "Device: cpu" in captured.out
    assert f"{bad_file.name}: found an unreadable file" in captured.err


def test_output_folder_must_differ_from_input(unloadable_model, bundled_dataset, tmp_path):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    shutil.copy(sorted((bundled_dataset / "imagesTs").iterdir())[0], inputs)

    with pytest.raises(ValueError, match="is the input folder"):
        inference.predict(inputs, inputs, unloadable_model, device="cpu", progress=False)


def test_missing_fold_checkpoint_named(unloadable_model, bundled_dataset, tmp_path):
    with pytest.raises(FileNotFoundError, match="fold_3"):
        inference.predict(bundled_dataset / "imagesTs", tmp_path / "out", unloadable_model, folds=["3"],
                          device="cpu", progress=False)


def test_find_model_folder_needs_results_only(unloadable_model, monkeypatch):
    results = unloadable_model.parents[1]
    for name in ("nnUNet_raw", "nnUNet_preprocessed"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("nnUNet_results", str(results))

    assert inference.find_model_folder(DATASET_ID) == unloadable_model
    assert inference.find_model_folder(DATASET_NAME) == unloadable_model
    with pytest.raises(FileNotFoundError, match="MRICoreTrainer_lora__MRICorePlans__2d"):
        inference.find_model_folder(DATASET_ID, trainer="MRICoreTrainer_lora")
    with pytest.raises(FileNotFoundError, match="No dataset with id 7"):
        inference.find_model_folder("7")


def test_select_folds_uses_finished_folds(tmp_path):
    for fold, finished in ((0, True), (1, False), (2, True)):
        (tmp_path / f"fold_{fold}").mkdir()
        if finished:
            (tmp_path / f"fold_{fold}" / inference.CHECKPOINT_NAME).write_bytes(b"")
    (tmp_path / "fold_all").mkdir()

    assert inference.select_folds(tmp_path) == [0, 2]
    assert inference.select_folds(tmp_path, ["2"]) == [2]


def test_resolve_device():
    assert inference.resolve_device("cpu") == torch.device("cpu")
    if torch.cuda.is_available():
        expected = "cuda"
    elif torch.backends.mps.is_available():
        expected = "mps"
    else:
        expected = "cpu"
    assert inference.resolve_device("auto").type == expected
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="no usable CUDA GPU"):
            inference.resolve_device("cuda")
