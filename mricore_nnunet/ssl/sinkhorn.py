"""Sinkhorn-Knopp centring of teacher outputs, from SwAV (Caron et al., 2020) as used in DINOv2."""

from __future__ import annotations

import torch
import torch.distributed as dist


@torch.no_grad()
def sinkhorn_knopp(teacher_logits: torch.Tensor, temperature: float, iterations: int = 3) -> torch.Tensor:
    """Return teacher targets whose prototype usage is balanced over the (global) batch.

    teacher_logits: N x K. The result is N x K, each row summing to 1. Under torch.distributed the
    sums run over the samples of all processes, so every process uses the same marginals.
    """
    world_size = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
    q = torch.exp((teacher_logits.float() - teacher_logits.float().max()) / temperature).t()  # K x N
    num_prototypes = q.shape[0]
    num_samples = q.shape[1] * world_size

    total = q.sum()
    if world_size > 1:
        dist.all_reduce(total)
    q /= total

    for _ in range(iterations):
        # Each prototype gets 1/K of the mass ...
        rows = q.sum(dim=1, keepdim=True)  # K x 1
        if world_size > 1:
            dist.all_reduce(rows)
        q /= rows
        q /= num_prototypes
        # ... and each sample 1/N.
        q /= q.sum(dim=0, keepdim=True)
        q /= num_samples

    q *= num_samples
    return q.t()  # N x K
