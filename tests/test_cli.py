"""The `mricore_nnunet` console script: env, inspect-checkpoint, embed and plan's error output."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from mricore_nnunet.checkpoints import save_encoder_checkpoint
from mricore_nnunet.encoder import MRICoreEncoder

CLI = str(Path(sys.executable).with_name("mricore_nnunet"))
TRAINERS = Path(__file__).resolve().parents[1] / "trainers"


def run_cli(*arguments: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([CLI, *arguments], capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=600, env=env)


def test_env_prints_nnunet_variables():
    completed = run_cli("env", "--base", "/data/nnunet")
    assert completed.returncode == 0
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        assert f"export {name}=" in completed.stdout
    assert f'export nnUNet_extTrainer="{TRAINERS}' in completed.stdout


def test_inspect_checkpoint_reports_layout(tmp_path):
    checkpoint = save_encoder_checkpoint(MRICoreEncoder("tiny", 64, 1), tmp_path / "tiny.pth")
    completed = run_cli("inspect-checkpoint", str(checkpoint))
    assert completed.returncode == 0, completed.stderr
    assert "mricore_nnunet" in completed.stdout
    assert "tiny" in completed.stdout


def test_inspect_checkpoint_rejects_random_bytes(tmp_path):
    bogus = tmp_path / "weights.pth"
    bogus.write_bytes(np.random.default_rng(0).bytes(256))
    completed = run_cli("inspect-checkpoint", str(bogus))
    assert completed.returncode == 1
    assert str(bogus) in completed.stderr
    assert "Traceback" not in completed.stderr


def test_embed_writes_npz(tmp_path, bundled_dataset):
    image = sorted((bundled_dataset / "imagesTr").iterdir())[0]
    completed = run_cli("embed", "-i", str(image), "-o", str(tmp_path / "out"), "--input-size", "64")
    assert completed.returncode == 0, completed.stderr
    outputs = list((tmp_path / "out").glob("*.npz"))
    assert len(outputs) == 1
    with np.load(outputs[0]) as embeddings:
        assert embeddings["slice_embeddings"].ndim == 2
        assert np.isfinite(embeddings["volume_embedding"]).all()


def test_plan_reports_bad_dataset_without_traceback(tmp_path, bundled_dataset):
    raw = tmp_path / "nnUNet_raw" / "Dataset005_Broken"
    (raw / "imagesTr").mkdir(parents=True)
    (raw / "labelsTr").mkdir()
    case = sorted((bundled_dataset / "labelsTr").iterdir())[0].name[: -len(".nii.gz")]
    shutil.copy(bundled_dataset / "imagesTr" / f"{case}_0000.nii.gz", raw / "imagesTr" / f"{case}.nii.gz")
    shutil.copy(bundled_dataset / "labelsTr" / f"{case}.nii.gz", raw / "labelsTr")
    dataset_json = json.loads((bundled_dataset / "dataset.json").read_text(encoding="utf-8"))
    dataset_json["numTraining"] = 1
    (raw / "dataset.json").write_text(json.dumps(dataset_json))
    env = {**os.environ, "nnUNet_raw": str(tmp_path / "nnUNet_raw"),
           "nnUNet_preprocessed": str(tmp_path / "pre"), "nnUNet_results": str(tmp_path / "res")}

    completed = run_cli("plan", "-d", "5", "--preset", "tiny", env=env)
    assert completed.returncode == 1
    assert f"{case}.nii.gz" in completed.stderr
    assert f"{case}_0000.nii.gz" in completed.stderr
    assert "Traceback" not in completed.stderr
    assert not (tmp_path / "pre" / "Dataset005_Broken").exists()
