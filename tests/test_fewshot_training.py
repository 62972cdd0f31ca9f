"""The trainers on a few-shot dataset: every training sample comes from an annotated slice."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import torch

from mricore_nnunet.fewshot import create_fewshot_dataset
from mricore_nnunet.nnunet_env import plugin_dir


def test_training_batches_come_from_annotated_slices(tmp_path, bundled_dataset, monkeypatch):
    raw = tmp_path / "nnUNet_raw"
    shutil.copytree(bundled_dataset, raw / bundled_dataset.name, ignore=shutil.ignore_patterns("imagesTs", "labelsTs"))
    result = create_fewshot_dataset(4, 2, seed=3, slices_per_volume=1, num_validation_volumes=1, raw_dir=raw)

    env = {**os.environ, "nnUNet_raw": str(raw), "nnUNet_preprocessed": str(tmp_path / "pre"),
           "nnUNet_results": str(tmp_path / "res"), "nnUNet_extTrainer": str(plugin_dir("trainers"))}
    plan = subprocess.run([str(Path(sys.executable).with_name("mricore_nnunet")), "plan", "-d", result.dataset_name,
                           "--preset", "tiny", "--input-size", "64", "--batch-size", "8", "--random-init"],
                          env=env, capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=600)
    assert plan.returncode == 0, plan.stderr[-3000:]

    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results", "nnUNet_extTrainer"):
        monkeypatch.setenv(name, env[name])
    from nnunetv2.run.run_training import get_trainer_from_args

    trainer = get_trainer_from_args(result.dataset_name, "2d", 0, "MRICoreTrainer", "MRICorePlans",
                                    device=torch.device("cpu"))
    trainer.initialize()
    trainer.dataloader_train, trainer.dataloader_val = trainer.get_dataloaders()
    for _ in range(3):
        batch = next(trainer.dataloader_train)
        target = batch["target"][0] if isinstance(batch["target"], list) else batch["target"]
        # target: B x 1 x H x W, with the ignore label where nothing is annotated.
        for sample in target:
            assert (sample != result.ignore_label).any(), "a training patch without any annotated voxel"
