"""`mricore_nnunet plan`: validation, fingerprint, the MRI-CORE planner and 2D preprocessing in one call."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from mricore_nnunet import nnunet_env, planning
from mricore_nnunet.encoder import MINMAX_IMAGENET

logger = logging.getLogger(__name__)


def pretrain_info_for(checkpoint: str | os.PathLike | None, preset: str | None, input_size: int, random_init: bool) -> dict[str, Any]:
    """Return the plans' record of the encoder initialisation: checkpoint path, sha256, layout, preset, normalisation.

    A checkpoint is read and checked against the encoder now, so a bad file stops planning rather
    than training. `random_init` records a deliberate random start (the from-scratch baseline).
    """
    if checkpoint is not None:
        from mricore_nnunet.checkpoints import build_encoder_from_checkpoint

        encoder, report = build_encoder_from_checkpoint(checkpoint, img_size=input_size)
        if preset is not None and preset != encoder.preset_name:
            raise ValueError(
                f"The checkpoint {checkpoint} contains a {encoder.preset_name} encoder, but --preset {preset} was given. "
                f"Leave out --preset to use the checkpoint's architecture."
            )
        return {
            "init": "pretrained",
            "checkpoint": str(Path(checkpoint).resolve()),
            "sha256": report.sha256,
            "layout": report.layout,
            "preset": encoder.preset_name,
            "normalization": encoder.normalization,
            "load_summary": report.summary(),
        }
    return {
        "init": "random" if random_init else "unset",
        "checkpoint": None,
        "sha256": None,
        "layout": None,
        "preset": preset or "vit_b",
        "normalization": dict(MINMAX_IMAGENET),
    }


def plan_dataset(
    dataset: str | int,
    checkpoint: str | os.PathLike | None = None,
    input_size: int = planning.DEFAULT_INPUT_SIZE,
    preset: str | None = None,
    memory_gib: float = 8.0,
    random_init: bool = False,
    num_processes: int = 1,
    plans_name: str = planning.PLANS_NAME,
    replace_nonfinite: bool = False,
    batch_size: int | None = None,
    gradient_checkpointing: bool = False,
) -> Path:
    """Validate the raw dataset, extract its fingerprint when missing, plan and preprocess the 2D configuration.

    Returns the path of the plans file. nnU-Net's folders must be set in the environment.
    """
    nnunet_env.configure_environment()
    from nnunetv2.experiment_planning.plan_and_preprocess_api import extract_fingerprint_dataset, preprocess_dataset
    from nnunetv2.paths import nnUNet_preprocessed, nnUNet_raw
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name
    from nnunetv2.utilities.find_class_by_name import recursive_find_python_class

    from mricore_nnunet import validation

    dataset_name = maybe_convert_to_dataset_name(dataset)
    dataset_id = int(dataset_name[7:10])
    raw_folder = Path(nnUNet_raw.require()) / dataset_name
    summary = validation.check_raw_dataset(raw_folder, num_folds=None, allow_nonfinite=replace_nonfinite)
    for warning in summary.warnings:
        logger.warning(warning)

    info = pretrain_info_for(checkpoint, preset, input_size, random_init)
    if info["init"] == "unset":
        logger.warning(
            "No --checkpoint given: MRICoreTrainer will need MRICORE_CHECKPOINT at training time, or train "
            "MRICoreTrainer_scratch for a randomly initialised encoder (or plan with --random-init)."
        )

    fingerprint = Path(nnUNet_preprocessed.require()) / dataset_name / "dataset_fingerprint.json"
    if not fingerprint.is_file():
        logger.info("Extracting the dataset fingerprint of %s", dataset_name)
        extract_fingerprint_dataset(dataset_id, check_dataset_integrity=True, clean=False, num_processes=num_processes)

    planner_class = recursive_find_python_class(
        str(nnunet_env.plugin_dir("planners")), "MRICorePlanner", current_module=None
    )
    planner = planner_class(
        dataset_id, gpu_memory_target_in_gb=memory_gib, plans_name=plans_name,
        input_size=input_size, preset=info["preset"], pretrain_info=info, batch_size=batch_size,
        gradient_checkpointing=gradient_checkpointing,
    )
    planner.plan_experiment()
    preprocess_dataset(dataset_id, plans_name, configurations=("2d",), num_processes=(num_processes,))
    return Path(nnUNet_preprocessed.require()) / dataset_name / f"{plans_name}.json"
