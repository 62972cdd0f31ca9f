"""Progress lines and collapse indicators of a pre-training run."""

from __future__ import annotations

import logging
import math
import time
from collections import defaultdict

import torch

logger = logging.getLogger(__name__)


@torch.no_grad()
def collapse_indicators(teacher_targets: torch.Tensor, student_features: torch.Tensor) -> dict[str, float]:
    """Return statistics that reveal the two ways self-distillation collapses.

    teacher_targets: N x K probabilities; student_features: N x D image features.
    `teacher_entropy` near 0 means every target is one-hot (collapse to sharp outputs);
    `teacher_usage_entropy` (entropy of the mean target) near 0 means one prototype wins for
    every image. When both entropies are near log K, the targets are uniform.
    `feature_std`, the std over the batch of L2-normalised features averaged over dimensions,
    falls towards 0 when all images map to the same feature (1/sqrt(D) for spread-out features).
    """
    probabilities = teacher_targets.float().clamp_min(1e-12)
    entropy = -(probabilities * probabilities.log()).sum(dim=-1).mean()
    mean_target = probabilities.mean(dim=0)
    usage_entropy = -(mean_target * mean_target.log()).sum()
    normalised = torch.nn.functional.normalize(student_features.float(), dim=-1)
    feature_std = normalised.std(dim=0).mean() if normalised.shape[0] > 1 else torch.tensor(0.0)
    return {
        "teacher_entropy": float(entropy),
        "teacher_usage_entropy": float(usage_entropy),
        "feature_std": float(feature_std),
    }


class ProgressLog:
    """Average values over the last `every` iterations and log them with images per second and ETA."""

    def __init__(self, every: int, total_iterations: int, images_per_iteration: int, log_k: float):
        self.every = every
        self.total = total_iterations
        self.images_per_iteration = images_per_iteration
        self.log_k = log_k
        self.sums: dict[str, float] = defaultdict(float)
        self.count = 0
        self.window_start = time.perf_counter()

    def add(self, iteration: int, values: dict[str, float]) -> None:
        """Record the values of the finished iteration (1-based) and log when a window is full."""
        for key, value in values.items():
            self.sums[key] += value
        self.count += 1
        if self.count < self.every and iteration < self.total:
            return

        elapsed = time.perf_counter() - self.window_start
        seconds_per_iteration = elapsed / self.count
        images_per_second = self.images_per_iteration / seconds_per_iteration if seconds_per_iteration > 0 else math.inf
        eta = seconds_per_iteration * (self.total - iteration)
        means = {key: value / self.count for key, value in self.sums.items()}
        logger.info(
            "iteration %d/%d  loss %.4f (dino %.4f, ibot %.4f, koleo %.4f)  lr %.2e  "
            "teacher entropy %.3f / usage %.3f of log K %.3f  feature std %.4f  %.1f images/s  ETA %s",
            iteration, self.total, means.get("loss", math.nan), means.get("dino", math.nan),
            means.get("ibot", math.nan), means.get("koleo", math.nan), means.get("lr", math.nan),
            means.get("teacher_entropy", math.nan), means.get("teacher_usage_entropy", math.nan), self.log_k,
            means.get("feature_std", math.nan), images_per_second, format_duration(eta),
        )
        self.sums.clear()
        self.count = 0
        self.window_start = time.perf_counter()


def format_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}"
