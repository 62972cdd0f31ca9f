"""Self-distillation loss on image-level outputs, from DINO (Caron et al., 2021) and DINOv2."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from .sinkhorn import sinkhorn_knopp


class DINOLoss(nn.Module):
    """Cross-entropy between the centred, sharpened teacher and the student over crop pairs.

    Teacher targets come from the global crops only. Every student crop is compared with every
    teacher crop except the same view, and the result is averaged over the compared pairs.
    """

    def __init__(self, num_prototypes: int, student_temp: float = 0.1, center_momentum: float = 0.9):
        super().__init__()
        self.student_temp = student_temp
        self.center_momentum = center_momentum
        self.register_buffer("center", torch.zeros(1, num_prototypes))

    @torch.no_grad()
    def teacher_targets(
        self, teacher_logits: torch.Tensor, teacher_temp: float, sinkhorn: bool = False, sinkhorn_iterations: int = 3
    ) -> torch.Tensor:
        """Return teacher probabilities (N x K) from logits (N x K): centred softmax or Sinkhorn-Knopp."""
        if sinkhorn:
            return sinkhorn_knopp(teacher_logits, teacher_temp, sinkhorn_iterations)
        return F.softmax((teacher_logits.float() - self.center) / teacher_temp, dim=-1)

    def forward(self, student_logits: list[torch.Tensor], teacher_targets: list[torch.Tensor]) -> torch.Tensor:
        """Average cross-entropy over all (teacher view, other student view) pairs.

        student_logits: one B x K tensor per crop, global crops first, in the teacher's order.
        teacher_targets: one B x K probability tensor per global crop.
        """
        total = student_logits[0].new_zeros(())
        pairs = 0
        for teacher_index, target in enumerate(teacher_targets):
            for student_index, logits in enumerate(student_logits):
                if student_index == teacher_index:
                    continue
                log_probs = F.log_softmax(logits.float() / self.student_temp, dim=-1)
                total = total + torch.sum(-target * log_probs, dim=-1).mean()
                pairs += 1
        if pairs == 0:
            raise ValueError("The DINO loss needs at least two crops per image; got one crop in total.")
        return total / pairs

    @torch.no_grad()
    def update_center(self, teacher_logits: torch.Tensor) -> None:
        """Move the centre towards the mean teacher logit of this (global) batch. teacher_logits: N x K."""
        batch_sum = teacher_logits.float().sum(dim=0, keepdim=True)  # 1 x K
        count = torch.tensor(float(teacher_logits.shape[0]), device=teacher_logits.device)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(batch_sum)
            dist.all_reduce(count)
        batch_mean = batch_sum / count
        self.center.mul_(self.center_momentum).add_(batch_mean, alpha=1.0 - self.center_momentum)
