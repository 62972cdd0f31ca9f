"""KoLeo regulariser, a Kozachenko-Leonenko entropy estimate, from Sablayrolles et al. (2019) as used in DINOv2."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def koleo_loss(features: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Return -mean(log(distance to the nearest other sample)) of L2-normalised features (N x D).

    The distance is sqrt(squared distance + eps^2). Because of eps, duplicate rows give the finite
    value -log(eps) and finite gradients instead of infinity.
    """
    if features.shape[0] < 2:
        raise ValueError(f"KoLeo needs at least 2 samples to find neighbours, got features of shape {tuple(features.shape)}.")
    normalised = F.normalize(features.float(), dim=-1, eps=eps)
    with torch.no_grad():
        similarity = normalised @ normalised.t()  # N x N
        similarity.fill_diagonal_(-2.0)  # below any cosine, so a sample is never its own neighbour
        neighbour = similarity.argmax(dim=1)  # N
    squared = (normalised - normalised[neighbour]).pow(2).sum(dim=-1)  # N
    distance = torch.sqrt(squared + eps * eps)
    return -torch.log(distance).mean()
