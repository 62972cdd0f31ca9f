"""The pre-training loop: DINOv2-style self-distillation of the MRI-CORE encoder on unlabelled MRI slices."""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from ..checkpoints import build_encoder_from_checkpoint, save_encoder_checkpoint
from ..encoder import MRICoreEncoder
from .augment import MultiCrop
from .batches import IterationBatchSampler, MultiCropDataset, collate_crops
from .config import PretrainConfig
from .data import MANIFEST_NAME, SliceIndex, manifest_sha256, write_manifest
from .dino_loss import DINOLoss
from .distributed import ProcessContext, any_process_true, barrier, setup_process, teardown_process
from .ibot_loss import IBOTPatchLoss
from .koleo import koleo_loss
from .model import SelfDistillationNetwork
from .monitoring import ProgressLog, collapse_indicators
from .schedules import cosine, linear_warmup, warmup_cosine
from .state import STATE_NAME, load_training_state, restore_random_states, save_training_state

logger = logging.getLogger(__name__)

TEACHER_NAME = "teacher_encoder.pth"
METRICS_NAME = "metrics.jsonl"
# The batch-size ablation of DINO (Caron et al., 2021) covers global batches of 128 to 1024. Far
# below that the centre and the teacher statistics become noisy, so the run warns but goes on.
# NOTE: the threshold comes from natural-image results and was not measured on MRI.
TESTED_MIN_GLOBAL_BATCH = 128
SMALL_BATCH_FACTOR = 4
LR_REFERENCE_BATCH = 256


class NonFiniteLossError(RuntimeError):
    """A loss term became NaN or infinite; the message names the term, the iteration and what to try."""


@dataclass
class PretrainResult:
    """Output paths of a run and the per-iteration values (losses, indicators) of this process's iterations."""

    out_dir: Path
    state_path: Path
    manifest_path: Path
    manifest_sha256: str
    teacher_path: Path | None
    start_iteration: int
    end_iteration: int
    history: list[dict[str, float]] = field(default_factory=list)


def pretrain(config: PretrainConfig) -> PretrainResult:
    """Run (or resume) pre-training as configured and return the outputs.

    Launched under torchrun, every process runs this function and gets its share of each batch.
    When `out/last.pt` exists, the run resumes from it, provided the schedule settings, number
    of processes and data are unchanged.
    """
    context = setup_process(config.device)
    try:
        return _Run(config, context).train()
    finally:
        teardown_process(context)


def build_student_encoder(config: PretrainConfig) -> MRICoreEncoder:
    """Build the encoder to pre-train: from `config.init` (any layout the checkpoints package reads) or random."""
    if config.init is None:
        return MRICoreEncoder(config.preset, img_size=config.global_size)
    encoder, report = build_encoder_from_checkpoint(config.init, img_size=config.global_size)
    logger.info("Initialised the encoder from %s:\n%s", config.init, report)
    if encoder.preset_name != config.preset:
        logger.warning(
            "The checkpoint %s has the preset %r, so the preset %r that was set is not used.",
            config.init, encoder.preset_name, config.preset,
        )
    return encoder


def parameter_groups(network: torch.nn.Module) -> list[dict[str, Any]]:
    """Split trainable parameters into a weight-decayed group (matrices) and one without (biases, norms, embeddings)."""
    decay, no_decay = [], []
    for name, parameter in network.named_parameters():
        if not parameter.requires_grad:
            continue
        if parameter.ndim < 2 or name.endswith(("pos_embed", "mask_token")) or "rel_pos" in name:
            no_decay.append(parameter)
        else:
            decay.append(parameter)
    return [{"params": decay, "apply_weight_decay": True}, {"params": no_decay, "apply_weight_decay": False}]


class _Run:
    """One process's view of a pre-training run: data, networks, optimizer and the training loop."""

    def __init__(self, config: PretrainConfig, context: ProcessContext):
        self.config = config
        self.context = context
        self.device = context.device
        self.out_dir = config.out_dir
        self.state_path = self.out_dir / STATE_NAME
        self.global_batch = config.batch_size * context.world_size
        self.base_lr = config.lr * self.global_batch / LR_REFERENCE_BATCH

        self.slices = SliceIndex(config.data, config.slice_axis, config.blank_std_fraction, config.cache_volumes)
        self.manifest_path = self.out_dir / MANIFEST_NAME
        self.manifest_sha256 = manifest_sha256(self.slices.manifest())

        # Same seed on every process: identical initial weights, heads and mask token.
        torch.manual_seed(config.seed)
        encoder = build_student_encoder(config)
        self.head_size = config.head_size(encoder.preset_name)
        self.student = SelfDistillationNetwork(
            encoder, self.head_size.num_prototypes, self.head_size.hidden_dim, self.head_size.bottleneck_dim,
            config.separate_ibot_head,
        ).to(self.device)
        self.teacher = copy.deepcopy(self.student)
        for parameter in self.teacher.parameters():
            parameter.requires_grad_(False)

        self.optimizer = torch.optim.AdamW(parameter_groups(self.student), lr=self.base_lr, weight_decay=config.weight_decay)
        num_prototypes = self.head_size.num_prototypes
        self.dino_loss = DINOLoss(num_prototypes, config.student_temp, config.center_momentum).to(self.device)
        self.ibot_loss = IBOTPatchLoss(num_prototypes, config.student_temp, config.center_momentum).to(self.device)
        self.start_iteration = 0
        self._check_batch_size()
        self._resume_if_possible()
        # Written after the resume check, so a rejected resume leaves the saved run's manifest in place.
        if context.is_main:
            write_manifest(self.slices.manifest(), self.out_dir)

        self.model = self.student
        if context.distributed:
            # The neck is frozen, so every trainable parameter takes part in each forward.
            self.model = DistributedDataParallel(self.student, broadcast_buffers=False)

    # Set-up -------------------------------------------------------------------------------------------

    def _check_batch_size(self) -> None:
        if self.global_batch * SMALL_BATCH_FACTOR <= TESTED_MIN_GLOBAL_BATCH:
            logger.warning(
                "Global batch of %d slices (%d per process x %d processes) is far below the %d or more that "
                "DINO-style methods were tested with; the teacher centre is noisy and collapse more likely. "
                "The learning rate is scaled linearly to %.2e (lr %.2e x %d / %d). Raise --batch-size or add processes.",
                self.global_batch, self.config.batch_size, self.context.world_size, TESTED_MIN_GLOBAL_BATCH,
                self.base_lr, self.config.lr, self.global_batch, LR_REFERENCE_BATCH,
            )

    def _run_identity(self) -> dict[str, Any]:
        return {
            "schedule": self.config.schedule_values(),
            "world_size": self.context.world_size,
            "manifest_sha256": self.manifest_sha256,
        }

    def _resume_if_possible(self) -> None:
        if not self.state_path.exists():
            return
        state = load_training_state(self.state_path)
        stored, current = state["run_identity"], self._run_identity()
        differences = [
            f"{key}: saved {stored['schedule'].get(key)!r}, now {value!r}"
            for key, value in current["schedule"].items() if stored["schedule"].get(key) != value
        ]
        for key in ("world_size", "manifest_sha256"):
            if stored[key] != current[key]:
                differences.append(f"{key}: saved {stored[key]!r}, now {current[key]!r}")
        if differences:
            raise ValueError(
                f"{self.state_path} belongs to a run with other settings or data, so resuming would not continue "
                f"it ({'; '.join(differences)}). Use the original settings, or another --out for a new run."
            )

        self.student.load_state_dict(state["student"])
        self.teacher.load_state_dict(state["teacher"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.dino_loss.load_state_dict(state["dino_loss"])
        self.ibot_loss.load_state_dict(state["ibot_loss"])
        restore_random_states(state["random_states"])
        self.start_iteration = int(state["iteration"])
        logger.info("Resuming from %s at iteration %d of %d.", self.state_path, self.start_iteration, self.config.iterations)

    def _loader(self, end: int) -> DataLoader:
        config = self.config
        multicrop = MultiCrop(config.global_size, config.local_size, config.num_local_crops,
                              config.global_crop_scale, config.local_crop_scale, config.max_rotation_degrees)
        dataset = MultiCropDataset(self.slices, multicrop, config.seed, config.mask_probability,
                                   (config.mask_ratio_min, config.mask_ratio_max))
        sampler = IterationBatchSampler(self.start_iteration, end, config.batch_size, self.context.rank,
                                        self.context.world_size)
        return DataLoader(dataset, batch_sampler=sampler, collate_fn=collate_crops, num_workers=config.num_workers,
                          pin_memory=self.device.type == "cuda", persistent_workers=False)

    # Training -----------------------------------------------------------------------------------------

    def train(self) -> PretrainResult:
        config = self.config
        end = config.iterations if config.stop_after is None else min(config.iterations, config.stop_after)
        self._trim_metrics()
        progress = ProgressLog(config.log_every, config.iterations, self.global_batch, math.log(self.head_size.num_prototypes))
        history = []
        iteration = self.start_iteration
        if iteration < end:
            logger.info(
                "Pre-training iterations %d to %d of %d: %d slices per iteration over %d process(es), %d global + %d local crops each.",
                iteration + 1, end, config.iterations, self.global_batch, self.context.world_size, 2, config.num_local_crops,
            )

        last_time = time.perf_counter()
        for batch in self._loader(end):
            values = self._step(batch, iteration)
            now = time.perf_counter()
            values["seconds"] = now - last_time  # data loading and step of this process
            last_time = now
            iteration += 1
            history.append({"iteration": iteration, **values})
            if self.context.is_main:
                progress.add(iteration, values)
                self._append_metrics(history[-1])
            if iteration % config.save_every == 0 or iteration == end:
                self._save_state(iteration)

        teacher_path = None
        if iteration >= config.iterations:
            teacher_path = self._export_teacher(iteration)
        elif config.stop_after is not None:
            logger.info("Stopped at iteration %d of %d as requested; run the same command to continue.", iteration, config.iterations)
        barrier(self.context)
        return PretrainResult(self.out_dir, self.state_path, self.manifest_path, self.manifest_sha256, teacher_path,
                              self.start_iteration, iteration, history)

    def _schedules(self, iteration: int) -> dict[str, float]:
        config = self.config
        return {
            "lr": warmup_cosine(self.base_lr, config.min_lr, iteration, config.warmup, config.iterations),
            "weight_decay": cosine(config.weight_decay, config.weight_decay_end, iteration, config.iterations),
            "momentum": cosine(config.momentum_teacher, config.momentum_teacher_end, iteration, config.iterations),
            "teacher_temp": linear_warmup(config.warmup_teacher_temp, config.teacher_temp, iteration,
                                          config.teacher_temp_warmup),
        }

    def _step(self, batch: dict[str, torch.Tensor], iteration: int) -> dict[str, float]:
        config = self.config
        schedule = self._schedules(iteration)
        for group in self.optimizer.param_groups:
            group["lr"] = schedule["lr"]
            group["weight_decay"] = schedule["weight_decay"] if group["apply_weight_decay"] else 0.0

        global_crops = batch["global"].to(self.device, non_blocking=True)  # 2B x 1 x H x W
        masks = batch["masks"].to(self.device, non_blocking=True)  # 2B x H/16 x W/16
        local_crops = batch["local"].to(self.device, non_blocking=True) if "local" in batch else None  # NB x 1 x h x w
        batch_size = config.batch_size
        autocast = torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=config.amp)

        with torch.no_grad(), autocast:
            teacher_out = self.teacher(global_crops, None, masks, apply_mask_token=False)
        teacher_targets = self.dino_loss.teacher_targets(
            teacher_out["global_logits"], schedule["teacher_temp"], config.sinkhorn, config.sinkhorn_iterations
        )  # 2B x K
        patch_targets = self.ibot_loss.teacher_targets(
            teacher_out["patch_logits"], schedule["teacher_temp"], config.sinkhorn, config.sinkhorn_iterations
        )  # M x K

        with autocast:
            student_out = self.model(global_crops, local_crops, masks, apply_mask_token=True)
        student_logits = list(student_out["global_logits"].split(batch_size))
        if "local_logits" in student_out:
            student_logits += list(student_out["local_logits"].split(batch_size))

        terms = {"dino": self.dino_loss(student_logits, list(teacher_targets.split(batch_size)))}
        masked_per_crop = masks.flatten(1).sum(dim=1)  # 2B
        image_index = torch.repeat_interleave(torch.arange(masks.shape[0], device=self.device), masked_per_crop)
        terms["ibot"] = self.ibot_loss(student_out["patch_logits"], patch_targets, image_index,
                                       max(1, int((masked_per_crop > 0).sum())))
        if batch_size > 1:
            # One KoLeo term per global crop, each over the images of this process, as in DINOv2.
            terms["koleo"] = sum(koleo_loss(features) for features in student_out["global_features"].split(batch_size))
        else:
            terms["koleo"] = student_out["global_features"].sum() * 0.0
        loss = (config.dino_loss_weight * terms["dino"] + config.ibot_loss_weight * terms["ibot"]
                + config.koleo_loss_weight * terms["koleo"])
        self._check_finite(terms, loss, iteration)

        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.clip_grad > 0:
            torch.nn.utils.clip_grad_norm_(self.student.parameters(), config.clip_grad)
        if iteration < config.freeze_last_layer_iterations:
            # As in DINO: fixed prototypes at the start keep the first, noisy targets from moving them.
            for head in (self.student.dino_head, self.student.ibot_head):
                if head is not None:
                    head.prototypes.grad = None
        self.optimizer.step()

        with torch.no_grad():
            momentum = schedule["momentum"]
            for student_parameter, teacher_parameter in zip(self.student.parameters(), self.teacher.parameters()):
                teacher_parameter.mul_(momentum).add_(student_parameter.detach(), alpha=1.0 - momentum)
            if not config.sinkhorn:
                self.dino_loss.update_center(teacher_out["global_logits"])
                if teacher_out["patch_logits"].shape[0] > 0:
                    self.ibot_loss.update_center(teacher_out["patch_logits"])

        values = {key: float(value.detach()) for key, value in terms.items()}
        values["loss"] = float(loss.detach())
        values["lr"] = schedule["lr"]
        values.update(collapse_indicators(teacher_targets, student_out["global_features"].detach()))
        # Mean cross-entropy = mean teacher entropy + mean KL, because every teacher view is paired
        # with the same number of student views. The KL shows how well the student matches the
        # teacher even while centring changes the teacher's entropy.
        values["dino_kl"] = values["dino"] - values["teacher_entropy"]
        return values

    def _check_finite(self, terms: dict[str, torch.Tensor], loss: torch.Tensor, iteration: int) -> None:
        bad = {name: float(value.detach()) for name, value in terms.items() if not torch.isfinite(value.detach()).all()}
        if not bad and not torch.isfinite(loss.detach()):
            bad["total"] = float(loss.detach())
        # Every process stops together; a process that went on alone would wait forever in backward.
        if not any_process_true(bool(bad), self.context):
            return
        described = ", ".join(f"{name} loss = {value}" for name, value in bad.items()) or "a loss on another process"
        saved = f"{self.state_path} (resume point)" if self.state_path.exists() else "no training state was saved yet"
        raise NonFiniteLossError(
            f"Non-finite loss at iteration {iteration + 1} of {self.config.iterations}: {described}. Training "
            f"stopped; {saved}. Lower --lr, lengthen the warm-up, or run without --amp; check the data for "
            f"extreme or corrupt intensities (see {self.manifest_path.name})."
        )

    # Outputs ------------------------------------------------------------------------------------------

    def _save_state(self, iteration: int) -> None:
        if self.context.is_main:
            save_training_state(self.state_path, {
                "iteration": iteration,
                "run_identity": self._run_identity(),
                "config": self.config.to_dict(),
                "student": self.student.state_dict(),
                "teacher": self.teacher.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "dino_loss": self.dino_loss.state_dict(),
                "ibot_loss": self.ibot_loss.state_dict(),
                "data_order": {"seed": self.config.seed, "global_batch": self.global_batch,
                               "next_position": iteration * self.global_batch},
            })
            logger.debug("Saved the training state at iteration %d to %s.", iteration, self.state_path)
        barrier(self.context)

    def _export_teacher(self, iteration: int) -> Path:
        path = self.out_dir / TEACHER_NAME
        if self.context.is_main:
            encoder = copy.deepcopy(self.teacher.encoder).cpu()
            save_encoder_checkpoint(encoder, path, extra_metadata={
                "pretraining": {
                    "method": "dinov2_ibot_koleo",
                    "iterations": iteration,
                    "global_batch": self.global_batch,
                    "global_size": self.config.global_size,
                    "local_size": self.config.local_size,
                    "num_local_crops": self.config.num_local_crops,
                    "num_prototypes": self.head_size.num_prototypes,
                    "init": self.config.init,
                    "data_manifest_sha256": self.manifest_sha256,
                    "image_feature": "mean of the last block's patch tokens (the encoder has no class token)",
                    "neck": "not trained by pre-training (kept from the initialisation)",
                },
            })
        return path

    def _append_metrics(self, values: dict[str, float]) -> None:
        with (self.out_dir / METRICS_NAME).open("a", encoding="utf-8") as file:
            file.write(json.dumps(values) + "\n")

    def _trim_metrics(self) -> None:
        """Drop metric lines past the resume point: a killed run may have logged iterations it did not save."""
        path = self.out_dir / METRICS_NAME
        if not self.context.is_main or not path.exists():
            return
        saved_lines = [line for line in path.read_text(encoding="utf-8").splitlines()
                       if line.strip() and json.loads(line).get("iteration", 0) <= self.start_iteration]
        path.write_text("".join(line + "\n" for line in saved_lines), encoding="utf-8")
