"""nnU-Net experiment planner for the MRI-CORE ViT: one 2D configuration, written as plans `MRICorePlans`.

nnU-Net looks planners up only inside its own package, so `mricore_nnunet plan` runs this one.
The decisions come from `mricore_nnunet.planning`; this class only fits them into nnU-Net's plans.
"""

from __future__ import annotations

import shutil
from typing import Any

import numpy as np
from batchgenerators.utilities.file_and_folder_operations import join
from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import ExperimentPlanner
from nnunetv2.paths import nnUNet_preprocessed

from mricore_nnunet import planning


class MRICorePlanner(ExperimentPlanner):
    """Plan a 2D configuration whose patch is the encoder input and whose in-plane spacing fills it.

    Args beyond nnU-Net's planner:
        input_size: side of the square encoder input in pixels, a multiple of 16 (256, 512, 1024).
        preset: encoder preset the network is built with.
        pretrain_info: the checkpoint record written into the plans (see `mricore_nnunet.plan`).
        memory_gib is nnU-Net's `gpu_memory_target_in_gb`: memory for one training step, for the batch size.
        batch_size: a fixed batch size instead of the one estimated from the memory target.
        gradient_checkpointing: recompute encoder activations in the backward pass to save memory.
    """

    def __init__(
        self,
        dataset_name_or_id: str | int,
        gpu_memory_target_in_gb: float = 8,
        preprocessor_name: str = "DefaultPreprocessor",
        plans_name: str = planning.PLANS_NAME,
        overwrite_target_spacing=None,
        suppress_transpose: bool = False,
        input_size: int = planning.DEFAULT_INPUT_SIZE,
        preset: str = "vit_b",
        pretrain_info: dict[str, Any] | None = None,
        batch_size: int | None = None,
        gradient_checkpointing: bool = False,
    ):
        super().__init__(
            dataset_name_or_id, gpu_memory_target_in_gb, preprocessor_name, plans_name,
            overwrite_target_spacing, suppress_transpose,
        )
        self.input_size = input_size
        self.preset = preset
        self.pretrain_info = pretrain_info or {}
        self.fixed_batch_size = batch_size
        self.gradient_checkpointing = gradient_checkpointing

    def plan_experiment(self) -> dict:
        transpose_forward, transpose_backward = self.determine_transpose()
        spacings = np.array(self.dataset_fingerprint["spacings"])[:, transpose_forward]
        shapes = np.array(self.dataset_fingerprint["shapes_after_crop"])[:, transpose_forward]
        median_spacing = np.median(spacings, 0)
        median_shape = np.median(shapes, 0)

        spacing_2d = planning.inplane_target_spacing(median_spacing[1:], median_shape[1:], self.input_size)
        new_shapes = shapes[:, 1:] * spacings[:, 1:] / np.array(spacing_2d)
        median_shape_2d = np.median(new_shapes, 0)
        num_slices = float(np.sum(shapes[:, 0]))
        num_classes = len(self.dataset_json["labels"])

        cap = planning.dataset_batch_cap(median_shape_2d, num_slices, (self.input_size, self.input_size))
        batch_size, input_size = planning.choose_batch_size_and_input_size(
            self.preset, self.input_size, self.UNet_vram_target_GB, max(cap, 2), num_classes=num_classes,
            gradient_checkpointing=self.gradient_checkpointing,
        )
        if self.fixed_batch_size is not None:
            batch_size = self.fixed_batch_size
        if input_size != self.input_size:
            spacing_2d = planning.inplane_target_spacing(median_spacing[1:], median_shape[1:], input_size)
            median_shape_2d = np.median(shapes[:, 1:] * spacings[:, 1:] / np.array(spacing_2d), 0)

        resampling_data, data_kwargs, resampling_seg, seg_kwargs = self.determine_resampling()
        resampling_probabilities, probabilities_kwargs = self.determine_segmentation_softmax_export_fn()
        normalization_schemes, mask_is_used_for_norm = self.determine_normalization_scheme_and_whether_mask_is_used_for_norm()

        plan_2d = {
            "data_identifier": self.generate_data_identifier("2d"),
            "preprocessor_name": self.preprocessor_name,
            "batch_size": batch_size,
            "patch_size": [input_size, input_size],
            "median_image_size_in_voxels": [float(i) for i in median_shape_2d],
            "spacing": spacing_2d,
            "normalization_schemes": normalization_schemes,
            "use_mask_for_norm": mask_is_used_for_norm,
            "resampling_fn_data": resampling_data.__name__,
            "resampling_fn_seg": resampling_seg.__name__,
            "resampling_fn_data_kwargs": data_kwargs,
            "resampling_fn_seg_kwargs": seg_kwargs,
            "resampling_fn_probabilities": resampling_probabilities.__name__,
            "resampling_fn_probabilities_kwargs": probabilities_kwargs,
            "architecture": planning.architecture_entry(
                self.preset, input_size, self.pretrain_info.get("normalization"), self.gradient_checkpointing
            ),
            "batch_dice": True,
        }

        shutil.copy(join(self.raw_dataset_folder, "dataset.json"), join(nnUNet_preprocessed, self.dataset_name, "dataset.json"))
        plans = {
            "dataset_name": self.dataset_name,
            "plans_name": self.plans_identifier,
            "original_median_spacing_after_transp": [float(i) for i in median_spacing],
            "original_median_shape_after_transp": [int(round(i)) for i in median_shape],
            "image_reader_writer": self.determine_reader_writer().__name__,
            "transpose_forward": [int(i) for i in transpose_forward],
            "transpose_backward": [int(i) for i in transpose_backward],
            "configurations": {"2d": plan_2d},
            "experiment_planner_used": self.__class__.__name__,
            "label_manager": "LabelManager",
            "foreground_intensity_properties_per_channel": self.dataset_fingerprint[
                "foreground_intensity_properties_per_channel"
            ],
            "pretrain_info": self.pretrain_info,
        }
        self.plans = plans
        self.save_plans(plans)
        return plans
