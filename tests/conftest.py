"""Shared test settings: nnU-Net's worker counts for a 2-core machine, and the bundled real MRI."""

import json
import os
import shutil
from pathlib import Path

import pytest

# nnU-Net starts 8 data-augmentation and preprocessing workers by default; on 2 cores they thrash.
# Subprocesses of the tests inherit these values.
os.environ.setdefault("nnUNet_def_n_proc", "1")
os.environ.setdefault("nnUNet_n_proc_DA", "0")
# Busy-waiting OpenMP threads slowed nnU-Net's final validation about threefold while other test
# processes shared the 2 cores; passive waiting changes no result.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

BUNDLED_DATASET = Path(__file__).resolve().parents[1] / "mricore_nnunet" / "demo_data" / "Dataset004_Hippocampus"


@pytest.fixture(scope="session")
def bundled_dataset() -> Path:
    return BUNDLED_DATASET


def build_nnunet_workspace(root: Path, num_training: int, num_test: int, input_size: int,
                           extra_trainer_dirs: tuple[Path, ...] = ()) -> dict:
    """Lay out an nnU-Net workspace under `root` from the bundled data, with a tiny encoder checkpoint.

    Returns the raw dataset folder, a folder of test images, the checkpoint and an environment for
    subprocesses with nnU-Net's folders, our trainers and a 1-epoch, 2-iteration schedule.
    """
    import torch

    from mricore_nnunet.checkpoints import save_encoder_checkpoint
    from mricore_nnunet.encoder import MRICoreEncoder
    from mricore_nnunet.nnunet_env import plugin_dir

    raw = root / "nnUNet_raw" / BUNDLED_DATASET.name
    (raw / "imagesTr").mkdir(parents=True)
    (raw / "labelsTr").mkdir()
    labels = sorted((BUNDLED_DATASET / "labelsTr").iterdir())[:num_training]
    for label in labels:
        case = label.name[: -len(".nii.gz")]
        shutil.copy(BUNDLED_DATASET / "imagesTr" / f"{case}_0000.nii.gz", raw / "imagesTr")
        shutil.copy(label, raw / "labelsTr")
    dataset_json = json.loads((BUNDLED_DATASET / "dataset.json").read_text(encoding="utf-8"))
    dataset_json["numTraining"] = num_training
    (raw / "dataset.json").write_text(json.dumps(dataset_json), encoding="utf-8")

    test_images = root / "test_images"
    test_images.mkdir()
    for image in sorted((BUNDLED_DATASET / "imagesTs").iterdir())[:num_test]:
        shutil.copy(image, test_images)

    torch.manual_seed(0)
    checkpoint = save_encoder_checkpoint(MRICoreEncoder("tiny", input_size, 1), root / "tiny_encoder.pth")

    env = dict(os.environ)
    env.update({
        "nnUNet_raw": str(root / "nnUNet_raw"),
        "nnUNet_preprocessed": str(root / "nnUNet_preprocessed"),
        "nnUNet_results": str(root / "nnUNet_results"),
        "nnUNet_extTrainer": os.pathsep.join([str(plugin_dir("trainers")), *map(str, extra_trainer_dirs)]),
        "MRICORE_NUM_EPOCHS": "1",
        "MRICORE_ITERATIONS_PER_EPOCH": "2",
        "MRICORE_VAL_ITERATIONS_PER_EPOCH": "1",
    })
    env.pop("MRICORE_CHECKPOINT", None)
    return {"root": root, "raw": raw, "env": env, "checkpoint": checkpoint, "test_images": test_images}


@pytest.fixture(scope="session")
def nnunet_workspace():
    """The factory `build_nnunet_workspace`, for module-scoped fixtures."""
    return build_nnunet_workspace
