"""Shared test settings: nnU-Net's worker counts for a 2-core machine, and the bundled real MRI."""

import os
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
