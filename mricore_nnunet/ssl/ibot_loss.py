"""Masked-patch self-distillation loss, from iBOT (Zhou et al., 2022) as used in DINOv2."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .dino_loss import DINOLoss


class IBOTPatchLoss(DINOLoss):
    """Cross-entropy between teacher and student patch outputs at the positions hidden from the student.

    The teacher receives the unmasked crop and the student the masked one. Each masked image weighs the
    same, whatever its number of masked patches, as in DINOv2. The centre is separate from the
    image-level DINO centre because patch and image outputs have different statistics.
    """

    def forward(
        self, student_logits: torch.Tensor, teacher_targets: torch.Tensor, image_index: torch.Tensor, num_images: int
    ) -> torch.Tensor:
        """Return the loss.

        Args:
            student_logits: M x K logits for the M masked patches of the batch.
            teacher_targets: M x K probabilities at the same patches.
            image_index: M indices, the image each patch belongs to.
            num_images: number of images with at least one masked patch.
        """
        if student_logits.shape[0] == 0:
            return student_logits.sum() * 0.0
        log_probs = F.log_softmax(student_logits.float() / self.student_temp, dim=-1)
        per_patch = torch.sum(-teacher_targets * log_probs, dim=-1)  # M

        patches_per_image = torch.bincount(image_index)  # images with no masked patch get 0 and no weight
        weights = 1.0 / patches_per_image[image_index].float()  # M
        return torch.sum(per_patch * weights) / num_images
