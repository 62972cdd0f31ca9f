"""Per-iteration schedules of learning rate, weight decay, teacher momentum and teacher temperature."""

from __future__ import annotations

import math


def cosine(start: float, end: float, iteration: int, total: int) -> float:
    """Return the cosine interpolation from `start` (iteration 0) to `end` (iteration `total`)."""
    if total <= 0:
        return end
    progress = min(1.0, max(0.0, iteration / total))
    return end + 0.5 * (start - end) * (1.0 + math.cos(math.pi * progress))


def warmup_cosine(peak: float, end: float, iteration: int, warmup: int, total: int) -> float:
    """Return a linear warm-up from 0 to `peak` over `warmup` iterations, then cosine decay to `end` at `total`."""
    if iteration < warmup:
        return peak * (iteration + 1) / warmup
    return cosine(peak, end, iteration - warmup, total - warmup)


def linear_warmup(start: float, end: float, iteration: int, warmup: int) -> float:
    """Return the linear ramp from `start` to `end` over `warmup` iterations, then `end`."""
    if iteration >= warmup:
        return end
    return start + (end - start) * iteration / warmup
