"""Settings of a self-supervised pre-training run, with their defaults in one place."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

# Settings that fix the schedule and the data order. A resumed run must use the same values,
# otherwise it would not continue the run it claims to continue.
SCHEDULE_FIELDS = (
    "preset", "iterations", "batch_size", "global_size", "local_size", "num_local_crops", "lr", "min_lr",
    "warmup_iterations", "weight_decay", "weight_decay_end", "momentum_teacher", "momentum_teacher_end",
    "teacher_temp", "warmup_teacher_temp", "warmup_teacher_temp_iterations", "student_temp", "seed",
    "sinkhorn", "num_prototypes", "head_hidden_dim", "head_bottleneck_dim", "separate_ibot_head",
    "ibot_loss_weight", "koleo_loss_weight", "mask_probability", "mask_ratio_min", "mask_ratio_max",
    "slice_axis", "init",
)


@dataclasses.dataclass(frozen=True)
class HeadSize:
    """Width of the DINO and iBOT heads: prototypes, hidden MLP width and bottleneck width."""

    num_prototypes: int
    hidden_dim: int
    bottleneck_dim: int


# DINOv2's head for ViT-S and larger. The tiny preset gets a smaller one because the 65536-prototype
# heads would cost several times the tiny encoder itself.
DINOV2_HEAD = HeadSize(65536, 2048, 256)
HEAD_SIZES = {"tiny": HeadSize(4096, 512, 128)}


@dataclasses.dataclass
class PretrainConfig:
    """DINOv2-style pre-training settings; defaults follow DINOv2 (Oquab et al., 2023) where they apply."""

    data: list[str] = dataclasses.field(default_factory=list)
    out: str = "pretrain_output"
    init: str | None = None
    preset: str = "vit_b"

    # Optimisation. The learning rate is lr * global batch / 256 (linear scaling, as in DINO).
    iterations: int = 10_000
    batch_size: int = 32
    lr: float = 5e-4
    min_lr: float = 1e-6
    warmup_iterations: int | None = None  # default: 10 % of the iterations
    weight_decay: float = 0.04
    weight_decay_end: float = 0.2
    clip_grad: float = 3.0
    freeze_last_layer_iterations: int = 0

    # Teacher.
    momentum_teacher: float = 0.992
    momentum_teacher_end: float = 1.0
    teacher_temp: float = 0.07
    warmup_teacher_temp: float = 0.04
    warmup_teacher_temp_iterations: int | None = None  # default: 30 % of the iterations
    student_temp: float = 0.1
    center_momentum: float = 0.9
    sinkhorn: bool = False
    sinkhorn_iterations: int = 3

    # Heads and losses.
    # None: the size in HEAD_SIZES for the encoder's preset, else DINOV2_HEAD.
    num_prototypes: int | None = None
    head_hidden_dim: int | None = None
    head_bottleneck_dim: int | None = None
    separate_ibot_head: bool = True
    dino_loss_weight: float = 1.0
    ibot_loss_weight: float = 1.0
    koleo_loss_weight: float = 0.1

    # Multi-crop and masking.
    global_size: int = 224
    local_size: int = 96
    num_local_crops: int = 8
    global_crop_scale: tuple[float, float] = (0.32, 1.0)
    local_crop_scale: tuple[float, float] = (0.05, 0.32)
    max_rotation_degrees: float = 10.0
    mask_probability: float = 0.5
    mask_ratio_min: float = 0.1
    mask_ratio_max: float = 0.5

    # Data.
    slice_axis: int | None = None  # default: the axis of largest spacing
    blank_std_fraction: float = 0.01
    cache_volumes: int = 8
    num_workers: int = 0

    # Run control.
    seed: int = 0
    device: str = "cpu"
    amp: bool = False
    save_every: int = 500
    log_every: int = 10
    stop_after: int | None = None

    def __post_init__(self) -> None:
        self.data = [str(path) for path in self.data]
        self.global_crop_scale = tuple(self.global_crop_scale)
        self.local_crop_scale = tuple(self.local_crop_scale)
        self.validate()

    @property
    def out_dir(self) -> Path:
        return Path(self.out)

    @property
    def warmup(self) -> int:
        if self.warmup_iterations is not None:
            return self.warmup_iterations
        return max(1, self.iterations // 10)

    @property
    def teacher_temp_warmup(self) -> int:
        if self.warmup_teacher_temp_iterations is not None:
            return self.warmup_teacher_temp_iterations
        return max(1, (self.iterations * 3) // 10)

    def validate(self) -> None:
        """Raise ValueError on settings that cannot train, naming the setting and a valid value."""
        positive = {"iterations": self.iterations, "batch_size": self.batch_size, "save_every": self.save_every,
                    "log_every": self.log_every, "num_prototypes": self.num_prototypes,
                    "head_hidden_dim": self.head_hidden_dim, "head_bottleneck_dim": self.head_bottleneck_dim,
                    "cache_volumes": self.cache_volumes}
        for name, value in positive.items():
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}.")
        for name, size in (("global_size", self.global_size), ("local_size", self.local_size)):
            if size < 16 or size % 16:
                raise ValueError(f"{name} must be a positive multiple of the 16-pixel patch size, got {size}.")
        if self.num_local_crops < 0:
            raise ValueError(f"num_local_crops must be 0 or more, got {self.num_local_crops}.")
        if not 0.0 <= self.mask_ratio_min <= self.mask_ratio_max < 1.0:
            raise ValueError(
                f"Mask ratios must satisfy 0 <= min <= max < 1, got min {self.mask_ratio_min} and max {self.mask_ratio_max}."
            )
        if self.stop_after is not None and self.stop_after < 1:
            raise ValueError(f"stop_after must be at least 1, got {self.stop_after}.")
        if self.slice_axis is not None and self.slice_axis not in (0, 1, 2):
            raise ValueError(f"slice_axis must be 0, 1 or 2 (numpy axes of the z, y, x array), got {self.slice_axis}.")

    def head_size(self, preset_name: str) -> HeadSize:
        """Return the head size for an encoder of `preset_name`, with the values set here taking precedence."""
        default = HEAD_SIZES.get(preset_name, DINOV2_HEAD)
        return HeadSize(
            self.num_prototypes if self.num_prototypes is not None else default.num_prototypes,
            self.head_hidden_dim if self.head_hidden_dim is not None else default.hidden_dim,
            self.head_bottleneck_dim if self.head_bottleneck_dim is not None else default.bottleneck_dim,
        )

    def to_dict(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        values["global_crop_scale"] = list(self.global_crop_scale)
        values["local_crop_scale"] = list(self.local_crop_scale)
        return values

    def schedule_values(self) -> dict[str, Any]:
        values = self.to_dict()
        return {name: values[name] for name in SCHEDULE_FIELDS}
