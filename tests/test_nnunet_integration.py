"""nnU-Net's real command-line tools on the bundled hippocampus MRI, with the tiny encoder.

One module-scoped workspace is planned and trained once; the tests then check each stage's output.
Everything runs in subprocesses exactly as a user would type it, on the CPU.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from mricore_nnunet.checkpoints import save_encoder_checkpoint
from mricore_nnunet.encoder import MRICoreEncoder

NUM_TRAINING_CASES = 10
NUM_TEST_CASES = 2
INPUT_SIZE = 64
DATASET_ID = "4"
DATASET_NAME = "Dataset004_Hippocampus"

# A CNN baseline that is still nnU-Net's own trainer, only with a schedule short enough for a test.
BASELINE_TRAINER_SOURCE = '''
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer


class nnUNetTrainer_test(nnUNetTrainer):
    def __init__(self, plans, configuration, fold, dataset_json, device=None):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = 1
        self.num_iterations_per_epoch = 2
        self.num_val_iterations_per_epoch = 1
'''


def run(arguments: list[str], env: dict[str, str], expect_success: bool = True) -> subprocess.CompletedProcess:
    completed = subprocess.run(arguments, env=env, capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=900)
    if expect_success and completed.returncode != 0:
        raise AssertionError(
            f"{' '.join(arguments)} exited with {completed.returncode}\n--- stdout ---\n{completed.stdout[-4000:]}"
            f"\n--- stderr ---\n{completed.stderr[-4000:]}"
        )
    return completed


def console_script(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, nnunet_workspace):
    """Raw data (10 training cases, 2 test cases), a tiny encoder checkpoint and nnU-Net's environment."""
    root = tmp_path_factory.mktemp("nnunet")
    extra_trainers = root / "extra_trainers"
    extra_trainers.mkdir()
    (extra_trainers / "nnUNetTrainer_test.py").write_text(BASELINE_TRAINER_SOURCE, encoding="utf-8")
    return nnunet_workspace(root, NUM_TRAINING_CASES, NUM_TEST_CASES, INPUT_SIZE, (extra_trainers,))


@pytest.fixture(scope="module")
def trained(workspace):
    """Plan with our planner and train folds 0 and 1 of MRICoreTrainer through nnUNetv2_train."""
    env = workspace["env"]
    run([console_script("mricore_nnunet"), "plan", "-d", DATASET_ID, "--checkpoint", str(workspace["checkpoint"]),
         "--input-size", str(INPUT_SIZE), "--batch-size", "4"], env)
    for fold in ("0", "1"):
        run([console_script("nnUNetv2_train"), DATASET_ID, "2d", fold, "-tr", "MRICoreTrainer", "-p", "MRICorePlans",
             "-device", "cpu", "--npz"], env)
    return workspace


def model_folder(workspace, trainer: str, plans: str) -> Path:
    return workspace["root"] / "nnUNet_results" / DATASET_NAME / f"{trainer}__{plans}__2d"


def test_plans_describe_vit_configuration(trained):
    plans = json.loads((trained["root"] / "nnUNet_preprocessed" / DATASET_NAME / "MRICorePlans.json").read_text(encoding="utf-8"))
    configuration = plans["configurations"]["2d"]

    assert configuration["patch_size"] == [INPUT_SIZE, INPUT_SIZE]
    assert configuration["architecture"]["network_class_name"] == "mricore_nnunet.network.MRICoreSegmentationNetwork"
    assert configuration["batch_size"] == 4
    # Hippocampus crops are 1 mm isotropic, about 50 mm across: the slice is upsampled to fill 64 px.
    assert configuration["spacing"][0] < 1.0
    assert plans["pretrain_info"]["layout"] == "mricore_nnunet"
    assert plans["pretrain_info"]["checkpoint"] == str(trained["checkpoint"].resolve())
    assert len(plans["pretrain_info"]["sha256"]) == 64


def test_training_writes_final_checkpoints(trained):
    folder = model_folder(trained, "MRICoreTrainer", "MRICorePlans")
    for fold in (0, 1):
        assert (folder / f"fold_{fold}" / "checkpoint_final.pth").is_file()
        assert (folder / f"fold_{fold}" / "validation" / "summary.json").is_file()
    log = next((folder / "fold_0").glob("training_log_*.txt")).read_text(encoding="utf-8")
    assert "Encoder initialised from" in log
    # Hippocampus slices are smaller than the 64 px patch, so nnU-Net pads them; the loss stays finite.
    losses = [float(value) for value in re.findall(r"train_loss (\S+)", log)]
    assert losses
    assert all(math.isfinite(loss) for loss in losses)


def test_predict_keeps_input_geometry(trained):
    output = trained["root"] / "predictions_mricore"
    run([console_script("nnUNetv2_predict"), "-i", str(trained["test_images"]), "-o", str(output), "-d", DATASET_ID,
         "-c", "2d", "-f", "0", "1", "-tr", "MRICoreTrainer", "-p", "MRICorePlans", "-device", "cpu",
         "-npp", "1", "-nps", "1", "--save_probabilities"], trained["env"])

    for image_file in sorted(trained["test_images"].iterdir()):
        case = image_file.name[: -len("_0000.nii.gz")]
        image = sitk.ReadImage(str(image_file))
        prediction = sitk.ReadImage(str(output / f"{case}.nii.gz"))
        assert prediction.GetSize() == image.GetSize()
        assert np.allclose(prediction.GetSpacing(), image.GetSpacing())
        assert np.allclose(prediction.GetOrigin(), image.GetOrigin())
        assert np.allclose(prediction.GetDirection(), image.GetDirection())
        assert set(np.unique(sitk.GetArrayFromImage(prediction))) <= {0, 1, 2}
        assert (output / f"{case}.npz").is_file()


def test_trainer_runs_on_default_nnunet_plans(trained):
    """MRICoreTrainer adapts nnUNetPlans itself, and nnUNetv2_find_best_configuration compares it with nnU-Net's CNN."""
    env = dict(trained["env"], MRICORE_CHECKPOINT=str(trained["checkpoint"]))
    # nnU-Net 2.8.1's planner calls torch.set_num_threads(nnUNet_n_proc_DA), which fails for 0.
    run([console_script("nnUNetv2_plan_and_preprocess"), "-d", DATASET_ID, "-c", "2d", "-np", "1"],
        dict(env, nnUNet_n_proc_DA="1"))
    for fold in ("0", "1"):
        run([console_script("nnUNetv2_train"), DATASET_ID, "2d", fold, "-tr", "MRICoreTrainer", "-device", "cpu", "--npz"], env)
        run([console_script("nnUNetv2_train"), DATASET_ID, "2d", fold, "-tr", "nnUNetTrainer_test", "-device", "cpu", "--npz"], env)

    saved_plans = json.loads((model_folder(trained, "MRICoreTrainer", "nnUNetPlans") / "plans.json").read_text(encoding="utf-8"))
    patch_size = saved_plans["configurations"]["2d"]["patch_size"]
    assert all(side % 16 == 0 for side in patch_size)
    assert saved_plans["configurations"]["2d"]["architecture"]["arch_kwargs"]["preset"] == "tiny"

    run([console_script("nnUNetv2_find_best_configuration"), DATASET_ID, "-c", "2d", "-tr", "MRICoreTrainer",
         "nnUNetTrainer_test", "-p", "nnUNetPlans", "-f", "0", "1", "-np", "1"], env)
    inference = json.loads((trained["root"] / "nnUNet_results" / DATASET_NAME / "inference_information.json").read_text(encoding="utf-8"))
    compared = set(inference["all_results"])
    assert {"MRICoreTrainer__nnUNetPlans__2d", "nnUNetTrainer_test__nnUNetPlans__2d"} <= compared


def test_ensemble_of_mricore_and_cnn(trained):
    env = dict(trained["env"], MRICORE_CHECKPOINT=str(trained["checkpoint"]))
    folders = []
    for trainer in ("MRICoreTrainer", "nnUNetTrainer_test"):
        if not (model_folder(trained, trainer, "nnUNetPlans") / "fold_0" / "checkpoint_final.pth").is_file():
            pytest.skip("needs the models of test_trainer_runs_on_default_nnunet_plans")
        output = trained["root"] / f"predictions_{trainer}"
        run([console_script("nnUNetv2_predict"), "-i", str(trained["test_images"]), "-o", str(output), "-d", DATASET_ID,
             "-c", "2d", "-f", "0", "-tr", trainer, "-device", "cpu", "-npp", "1", "-nps", "1",
             "--save_probabilities"], env)
        folders.append(str(output))

    ensembled = trained["root"] / "ensembled"
    run([console_script("nnUNetv2_ensemble"), "-i", *folders, "-o", str(ensembled), "-np", "1"], env)
    for image_file in sorted(trained["test_images"].iterdir()):
        case = image_file.name[: -len("_0000.nii.gz")]
        assert sitk.ReadImage(str(ensembled / f"{case}.nii.gz")).GetSize() == sitk.ReadImage(str(image_file)).GetSize()


def test_trainer_loads_checkpoint_weights(trained, monkeypatch):
    """After initialize(), the network's encoder contains exactly the checkpoint's tensors."""
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results", "nnUNet_extTrainer"):
        monkeypatch.setenv(name, trained["env"][name])
    monkeypatch.delenv("MRICORE_CHECKPOINT", raising=False)
    from nnunetv2.run.run_training import get_trainer_from_args

    trainer = get_trainer_from_args(DATASET_ID, "2d", 0, "MRICoreTrainer", "MRICorePlans", device=torch.device("cpu"))
    trainer.initialize()

    saved = torch.load(trained["checkpoint"], map_location="cpu", weights_only=True)["state_dict"]
    loaded = trainer.network.encoder.state_dict()
    assert set(saved) == set(loaded)
    for key, tensor in saved.items():
        assert torch.equal(loaded[key], tensor), key


def test_trainer_without_checkpoint_stops_before_epoch_zero(trained):
    env = trained["env"]
    run([console_script("mricore_nnunet"), "plan", "-d", DATASET_ID, "--preset", "tiny", "--input-size",
         str(INPUT_SIZE), "--batch-size", "4", "--plans-name", "MRICorePlansNoCheckpoint"], env)
    completed = run([console_script("nnUNetv2_train"), DATASET_ID, "2d", "0", "-tr", "MRICoreTrainer", "-p",
                     "MRICorePlansNoCheckpoint", "-device", "cpu"], env, expect_success=False)

    assert completed.returncode != 0
    assert "No encoder checkpoint" in completed.stderr
    assert "MRICORE_CHECKPOINT" in completed.stderr
    assert "Epoch 0" not in completed.stdout


def test_trainer_with_mismatched_checkpoint_stops(trained):
    wider = MRICoreEncoder("small", INPUT_SIZE, 1)
    mismatched = save_encoder_checkpoint(wider, trained["root"] / "small_encoder.pth")
    env = dict(trained["env"], MRICORE_CHECKPOINT=str(mismatched))
    completed = run([console_script("nnUNetv2_train"), DATASET_ID, "2d", "0", "-tr", "MRICoreTrainer", "-p",
                     "MRICorePlans", "-device", "cpu"], env, expect_success=False)

    assert completed.returncode != 0
    assert str(mismatched) in completed.stderr
    assert "small" in completed.stderr
    assert "tiny" in completed.stderr
    assert "Epoch 0" not in completed.stdout


def test_killed_training_resumes_with_continue_flag(trained):
    """A training killed after an epoch continues from checkpoint_latest.pth with nnU-Net's --c."""
    import time

    env = dict(trained["env"], MRICORE_NUM_EPOCHS="4", MRICORE_SAVE_EVERY="1")
    fold_folder = model_folder(trained, "MRICoreTrainer", "MRICorePlans") / "fold_2"
    arguments = [console_script("nnUNetv2_train"), DATASET_ID, "2d", "2", "-tr", "MRICoreTrainer", "-p", "MRICorePlans",
                 "-device", "cpu"]
    process = subprocess.Popen(arguments, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not (fold_folder / "checkpoint_latest.pth").is_file() and process.poll() is None:
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail("no checkpoint_latest.pth within 300 s")
        time.sleep(0.2)
    process.kill()
    process.wait()
    assert not (fold_folder / "checkpoint_final.pth").is_file()

    resumed = run(arguments + ["--c"], env)
    assert (fold_folder / "checkpoint_final.pth").is_file()
    assert "Epoch 0\n" not in resumed.stdout
    assert "Epoch 3" in resumed.stdout
    assert not list(fold_folder.glob("*.partial"))
