"""The main job end to end on the bundled hippocampus MRI, through nnU-Net's own command-line tools.

Plan with the MRI-CORE planner, `nnUNetv2_train ... -tr MRICoreTrainer` on fold 0, `nnUNetv2_predict`
on the 8 held-out test cases, and nnU-Net's `nnUNetv2_evaluate_folder` for the Dice per label.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import time
from pathlib import Path

from mricore_nnunet import nnunet_env

logger = logging.getLogger(__name__)

DEMO_DATASET = Path(__file__).resolve().parent / "demo_data" / "Dataset004_Hippocampus"
DEMO_DATASET_ID = 4
TRAINER = "MRICoreTrainer"


def install_demo_dataset(raw_folder: Path) -> Path:
    """Copy the bundled training cases into `raw_folder` (once) and return the dataset folder."""
    target = raw_folder / DEMO_DATASET.name
    if not (target / "dataset.json").is_file():
        target.mkdir(parents=True, exist_ok=True)
        for part in ("imagesTr", "labelsTr"):
            shutil.copytree(DEMO_DATASET / part, target / part, dirs_exist_ok=True)
        shutil.copy2(DEMO_DATASET / "dataset.json", target / "dataset.json")
    return target


def run_nnunet_command(arguments: list[str], env: dict[str, str]) -> None:
    """Run one of nnU-Net's console commands, its output streamed, and fail loudly on a non-zero exit."""
    print(f"\n$ {' '.join(arguments)}", flush=True)
    completed = subprocess.run(arguments, env=env)
    if completed.returncode != 0:
        raise RuntimeError(f"'{' '.join(arguments)}' failed with exit code {completed.returncode}; its output is above.")


def dice_per_label(summary_file: Path) -> dict[str, float]:
    """Read the mean Dice per label from nnU-Net's evaluation summary."""
    summary = json.loads(summary_file.read_text(encoding="utf-8"))
    return {label: values["Dice"] for label, values in summary["mean"].items()}


def run_demo(
    work_dir: str | os.PathLike = "demo_output",
    checkpoint: str | None = None,
    num_epochs: int = 10,
    iterations_per_epoch: int = 50,
    batch_size: int = 8,
    input_size: int = 128,
    device: str = "cpu",
) -> int:
    """Run the main job on the bundled data in `work_dir` and print the Dice per label. Returns 0 on success."""
    from mricore_nnunet.plan import plan_dataset

    start = time.monotonic()
    work_dir = Path(work_dir).resolve()
    for name in nnunet_env.NNUNET_PATH_VARIABLES:
        os.environ[name] = str(work_dir / name)
    nnunet_env.configure_environment(work_dir)
    env = dict(os.environ)
    env.update({
        "nnUNet_def_n_proc": env.get("nnUNet_def_n_proc", "1"),
        "nnUNet_n_proc_DA": env.get("nnUNet_n_proc_DA", "0"),
        "MRICORE_NUM_EPOCHS": str(num_epochs),
        "MRICORE_ITERATIONS_PER_EPOCH": str(iterations_per_epoch),
        "MRICORE_VAL_ITERATIONS_PER_EPOCH": str(max(1, iterations_per_epoch // 5)),
    })
    print(f"Working in {work_dir} on {device}; nnU-Net's folders are set inside it.", flush=True)

    install_demo_dataset(work_dir / "nnUNet_raw")
    print("\n[1/4] Planning and preprocessing (mricore_nnunet plan)", flush=True)
    plan_dataset(
        DEMO_DATASET_ID, checkpoint=checkpoint, input_size=input_size,
        preset=None if checkpoint else "tiny", random_init=checkpoint is None, batch_size=batch_size,
    )

    print(f"\n[2/4] Training fold 0 for {num_epochs} epochs of {iterations_per_epoch} iterations", flush=True)
    run_nnunet_command(
        ["nnUNetv2_train", str(DEMO_DATASET_ID), "2d", "0", "-tr", TRAINER, "-p", "MRICorePlans", "-device", device], env
    )

    predictions = work_dir / "predictions"
    print("\n[3/4] Predicting the 8 held-out test cases", flush=True)
    run_nnunet_command(
        ["nnUNetv2_predict", "-i", str(DEMO_DATASET / "imagesTs"), "-o", str(predictions), "-d", str(DEMO_DATASET_ID),
         "-c", "2d", "-f", "0", "-tr", TRAINER, "-p", "MRICorePlans", "-device", device, "-npp", "1", "-nps", "1"],
        env,
    )

    print("\n[4/4] Scoring against the held-out labels (nnUNetv2_evaluate_folder)", flush=True)
    summary = predictions / "summary.json"
    run_nnunet_command(
        ["nnUNetv2_evaluate_folder", str(DEMO_DATASET / "labelsTs"), str(predictions),
         "-djfile", str(DEMO_DATASET / "dataset.json"), "-pfile", str(predictions / "plans.json"), "-o", str(summary)],
        env,
    )
    names = {str(v): k for k, v in json.loads((DEMO_DATASET / "dataset.json").read_text(encoding="utf-8"))["labels"].items()}
    print("\nDice on the 8 held-out cases:")
    for label, dice in dice_per_label(summary).items():
        print(f"  label {label} ({names.get(label, '?')}): {dice:.3f}")
    print(f"Done in {(time.monotonic() - start) / 60:.1f} minutes. Predictions: {predictions}")
    return 0
