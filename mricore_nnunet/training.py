"""The fine-tuning recipe behind the nnU-Net trainers: plans adaptation, encoder initialisation, optimiser, schedule.

The trainers in `trainers/` are thin nnU-Net subclasses; everything they decide is here, where it
is tested without nnU-Net's training loop.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import os
from typing import Any, Sequence

import torch
from torch import nn

from mricore_nnunet import planning
from mricore_nnunet.encoder import get_preset

logger = logging.getLogger(__name__)

CHECKPOINT_VARIABLE = "MRICORE_CHECKPOINT"


@dataclasses.dataclass
class Recipe:
    """Optimisation settings of a trainer. The schedule lengths can be overridden through environment variables."""

    num_epochs: int = 1000
    iterations_per_epoch: int = 250
    val_iterations_per_epoch: int = 50
    initial_lr: float = 3e-4
    weight_decay: float = 0.05
    layer_decay: float = 0.75
    warmup_fraction: float = 0.05
    # nnU-Net writes checkpoint_latest.pth every this many epochs, for resuming with --c.
    save_every: int = 50

    ENVIRONMENT = {
        "MRICORE_NUM_EPOCHS": "num_epochs",
        "MRICORE_ITERATIONS_PER_EPOCH": "iterations_per_epoch",
        "MRICORE_VAL_ITERATIONS_PER_EPOCH": "val_iterations_per_epoch",
        "MRICORE_SAVE_EVERY": "save_every",
    }

    def with_environment(self) -> "Recipe":
        """Return a copy with the schedule lengths from MRICORE_NUM_EPOCHS and friends, where set."""
        recipe = dataclasses.replace(self)
        for variable, field in self.ENVIRONMENT.items():
            value = os.environ.get(variable)
            if value is None:
                continue
            if not value.isdigit() or int(value) < 1:
                raise ValueError(f"{variable}={value!r} must be a positive whole number.")
            setattr(recipe, field, int(value))
        return recipe

    @property
    def warmup_epochs(self) -> int:
        """Epochs in which only the decoder trains; none for runs too short to have one."""
        return int(self.num_epochs * self.warmup_fraction) if self.num_epochs >= 10 else 0


def is_mricore_configuration(configuration: dict) -> bool:
    return configuration.get("architecture", {}).get("network_class_name") == planning.NETWORK_CLASS_NAME


def adapt_plans_for_vit(plans: dict, configuration_name: str, preset: str) -> dict:
    """Return a copy of nnU-Net plans whose configuration builds our network.

    This lets the trainers run on nnU-Net's default `nnUNetPlans`: the patch size is rounded up to a
    multiple of 16 and the architecture block replaced. The trainer saves these plans with the model,
    so inference rebuilds the same network.
    """
    plans = copy.deepcopy(plans)
    configuration = plans["configurations"][configuration_name]
    # Configurations may inherit; resolve the fields we read from the parent.
    parent = plans["configurations"].get(configuration.get("inherits_from", ""), {})
    patch_size = configuration.get("patch_size", parent.get("patch_size"))
    if patch_size is None or len(patch_size) != 2:
        raise ValueError(
            f"Configuration {configuration_name!r} has patch size {patch_size}; the MRI-CORE trainers need a 2D "
            f"configuration. Train with '2d', or plan with 'mricore_nnunet plan'."
        )
    new_patch = planning.round_up_to_patch_multiple(patch_size)
    configuration["patch_size"] = new_patch
    configuration["architecture"] = planning.architecture_entry(preset, max(new_patch))
    logger.info(
        "Plans %s do not build the MRI-CORE network: using patch size %s (from %s) and the %s encoder.",
        plans.get("plans_name"), new_patch, list(patch_size), preset,
    )
    return plans


def resolve_checkpoint(pretrain_info: dict[str, Any] | None) -> str | None:
    """Return the checkpoint to initialise the encoder from: MRICORE_CHECKPOINT, else the plans' record."""
    override = os.environ.get(CHECKPOINT_VARIABLE)
    if override:
        return override
    return (pretrain_info or {}).get("checkpoint")


def missing_checkpoint_message(plans_name: str) -> str:
    return (
        f"No encoder checkpoint: the plans {plans_name!r} record none and {CHECKPOINT_VARIABLE} is not set. "
        f"Plan with 'mricore_nnunet plan -d DATASET --checkpoint FILE', or set {CHECKPOINT_VARIABLE}=FILE "
        f"(an MRI-CORE, SAM or mricore_nnunet checkpoint), or train MRICoreTrainer_scratch for a randomly "
        f"initialised encoder."
    )


def load_pretrained_encoder(network: nn.Module, checkpoint: str, expected_sha256: str | None = None):
    """Load encoder weights from `checkpoint` into `network.encoder`, whatever its fine-tuning mode.

    Returns the checkpoint's load report. A file whose sha256 differs from the one recorded at
    planning time is loaded, with a warning, since a user may have moved or re-saved it.
    """
    from mricore_nnunet.checkpoints import build_encoder_from_checkpoint
    from mricore_nnunet.finetune import load_plain_encoder_state

    encoder = network.encoder
    plain, report = build_encoder_from_checkpoint(checkpoint, img_size=encoder.img_size, in_chans=encoder.in_chans)
    if plain.preset != encoder.preset:
        raise ValueError(
            f"The checkpoint {checkpoint} contains a {plain.preset_name} encoder "
            f"({plain.preset.embed_dim} wide, {plain.preset.depth} blocks), but the plans build a "
            f"{encoder.preset_name} encoder ({encoder.preset.embed_dim} wide, {encoder.preset.depth} blocks). "
            f"Plan again with this checkpoint, or use a checkpoint of the planned preset."
        )
    if expected_sha256 and report.sha256 != expected_sha256:
        logger.warning(
            "The checkpoint %s changed since planning (sha256 %s, planned %s); loading it anyway.",
            checkpoint, report.sha256, expected_sha256,
        )
    load_plain_encoder_state(encoder, plain.state_dict())
    return report


def parameter_groups(network: nn.Module, lr: float, weight_decay: float, layer_decay: float) -> list[dict]:
    """Split the parameters that require gradients into AdamW groups with layer-wise learning-rate decay in the encoder.

    The decoder comes first at the full rate. Encoder layer i of depth+1 gets lr * layer_decay**(depth+1-i).
    Biases, norms and the position embedding get no weight decay.
    """
    encoder = network.encoder
    depth = encoder.depth
    groups: dict[tuple[str, int, bool], dict] = {}

    def add(parameter: nn.Parameter, part: str, layer: int, scale: float, name: str) -> None:
        decay = parameter.ndim > 1 and not name.endswith("pos_embed")
        key = (part, layer, decay)
        if key not in groups:
            groups[key] = {
                "params": [], "lr_scale": scale, "weight_decay": weight_decay if decay else 0.0,
                "lr": lr * scale, "part": part,
            }
        groups[key]["params"].append(parameter)

    for name, parameter in network.named_parameters():
        if not parameter.requires_grad:
            # Frozen by the fine-tuning mode; parameters frozen only for the warm-up still need a group.
            continue
        if name.startswith("encoder."):
            local = name.removeprefix("encoder.")
            layer = encoder.layer_id(local)
            add(parameter, "encoder", layer, layer_decay ** (depth + 1 - layer), local)
        else:
            add(parameter, "decoder", 0, 1.0, name)
    # Decoder groups first, so nnU-Net's log of param_groups[0]["lr"] shows the decoder's rate.
    return sorted(groups.values(), key=lambda g: g["part"] != "decoder")


class WarmupPolyLR:
    """Decoder-only warm-up, then nnU-Net's polynomial decay for every group.

    During the first `warmup_epochs` the encoder groups have rate 0 and the decoder's rises linearly.
    Afterwards every group decays as (1 - epoch / num_epochs) ** 0.9 times its own base rate.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, initial_lr: float, num_epochs: int, warmup_epochs: int):
        self.optimizer = optimizer
        self.initial_lr = initial_lr
        self.num_epochs = num_epochs
        self.warmup_epochs = warmup_epochs

    def in_warmup(self, epoch: int) -> bool:
        return epoch < self.warmup_epochs

    def step(self, epoch: int) -> None:
        if self.in_warmup(epoch):
            factor = (epoch + 1) / self.warmup_epochs
            for group in self.optimizer.param_groups:
                group["lr"] = 0.0 if group["part"] == "encoder" else self.initial_lr * group["lr_scale"] * factor
            return
        factor = (1 - epoch / self.num_epochs) ** 0.9
        for group in self.optimizer.param_groups:
            group["lr"] = self.initial_lr * group["lr_scale"] * factor

    # nnU-Net stores and restores the scheduler through these when it saves a checkpoint.
    def state_dict(self) -> dict:
        return {"initial_lr": self.initial_lr, "num_epochs": self.num_epochs, "warmup_epochs": self.warmup_epochs}

    def load_state_dict(self, state: dict) -> None:
        self.initial_lr = state["initial_lr"]
        self.num_epochs = state["num_epochs"]
        self.warmup_epochs = state["warmup_epochs"]


def set_encoder_trainable(network: nn.Module, trainable: bool, finetune_trainable: set[str]) -> None:
    """Switch gradients of the encoder on or off, keeping the fine-tuning mode's frozen parts frozen.

    `finetune_trainable` contains the names of encoder parameters the fine-tuning mode trains.
    """
    for name, parameter in network.encoder.named_parameters():
        parameter.requires_grad_(trainable and name in finetune_trainable)


def preset_for_default_plans(checkpoint: str | None) -> str:
    """Return the encoder preset for plans we did not make: MRICORE_PRESET, the checkpoint's, or vit_b."""
    preset = os.environ.get("MRICORE_PRESET")
    if preset:
        get_preset(preset)
        return preset
    if checkpoint:
        from mricore_nnunet.checkpoints import build_encoder_from_checkpoint

        return build_encoder_from_checkpoint(checkpoint)[0].preset_name
    return "vit_b"


def is_out_of_memory(error: BaseException) -> bool:
    """Tell whether an exception from a training step means the device ran out of memory."""
    if isinstance(error, torch.OutOfMemoryError):
        return True
    # The CPU allocator raises a plain RuntimeError.
    return isinstance(error, RuntimeError) and "can't allocate memory" in str(error)


def out_of_memory_message(device: torch.device, batch_size: int, patch_size: Sequence[int], preset: str) -> str:
    """Return what to do after a training step ran out of memory, naming the planned sizes."""
    return (
        f"Training ran out of memory on {device} with batch size {batch_size}, patch size {list(patch_size)} and "
        f"the {preset} encoder. Options: plan again with a smaller batch ('mricore_nnunet plan ... --batch-size N' "
        f"or a lower --memory-gb), a smaller encoder input (--input-size 256 instead of 512 or 1024), a smaller "
        f"preset, or a trainer that trains fewer weights (MRICoreTrainer_frozen or MRICoreTrainer_lora)."
    )
