"""The README's walkthrough from an MSD task folder: nnU-Net's conversion, then our planner."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

NUM_CASES = 6


def console(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


def make_msd_task(folder: Path, bundled_dataset: Path) -> Path:
    """Lay out bundled cases as the Medical Segmentation Decathlon ships them: no channel suffix, v1 dataset.json."""
    task = folder / "Task04_Hippocampus"
    (task / "imagesTr").mkdir(parents=True)
    (task / "labelsTr").mkdir()
    (task / "imagesTs").mkdir()
    test_image = sorted((bundled_dataset / "imagesTs").iterdir())[0]
    shutil.copy(test_image, task / "imagesTs" / test_image.name.replace("_0000", ""))
    cases = sorted(p.name[: -len(".nii.gz")] for p in (bundled_dataset / "labelsTr").iterdir())[:NUM_CASES]
    training = []
    for case in cases:
        shutil.copy(bundled_dataset / "imagesTr" / f"{case}_0000.nii.gz", task / "imagesTr" / f"{case}.nii.gz")
        shutil.copy(bundled_dataset / "labelsTr" / f"{case}.nii.gz", task / "labelsTr" / f"{case}.nii.gz")
        training.append({"image": f"./imagesTr/{case}.nii.gz", "label": f"./labelsTr/{case}.nii.gz"})
    (task / "dataset.json").write_text(json.dumps({
        "name": "Hippocampus", "tensorImageSize": "3D", "modality": {"0": "MRI"},
        "labels": {"0": "background", "1": "Anterior", "2": "Posterior"},
        "numTraining": NUM_CASES, "numTest": 1, "training": training,
        "test": [f"./imagesTs/{test_image.name.replace('_0000', '')}"],
    }))
    return task


def test_msd_task_converts_and_plans(tmp_path, bundled_dataset):
    task = make_msd_task(tmp_path, bundled_dataset)
    env = {**os.environ, "nnUNet_raw": str(tmp_path / "raw"), "nnUNet_preprocessed": str(tmp_path / "pre"),
           "nnUNet_results": str(tmp_path / "res")}
    (tmp_path / "raw").mkdir()

    # Planning the MSD folder as it is names the conversion to run.
    shutil.copytree(task, tmp_path / "raw" / "Dataset104_Hippocampus")
    rejected = subprocess.run([console("mricore_nnunet"), "plan", "-d", "104", "--preset", "tiny"],
                              env=env, capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=600)
    assert rejected.returncode == 1
    assert "nnUNetv2_convert_MSD_dataset" in rejected.stderr

    converted = subprocess.run([console("nnUNetv2_convert_MSD_dataset"), "-i", str(task), "-overwrite_id", "4",
                                "-np", "1"], env=env, capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=600)
    assert converted.returncode == 0, converted.stderr[-2000:]
    assert (tmp_path / "raw" / "Dataset004_Hippocampus" / "imagesTr" / "hippocampus_001_0000.nii.gz").is_file()

    planned = subprocess.run([console("mricore_nnunet"), "plan", "-d", "4", "--preset", "tiny", "--input-size", "64",
                              "--random-init", "--batch-size", "2"], env=env, capture_output=True, text=True, encoding="utf-8", errors="replace",
                             timeout=600)
    assert planned.returncode == 0, planned.stderr[-2000:]
    assert "Train with: nnUNetv2_train 4 2d FOLD -tr MRICoreTrainer -p MRICorePlans" in planned.stdout
    plans = json.loads((tmp_path / "pre" / "Dataset004_Hippocampus" / "MRICorePlans.json").read_text(encoding="utf-8"))
    assert plans["configurations"]["2d"]["patch_size"] == [64, 64]
    assert plans["pretrain_info"]["init"] == "random"
