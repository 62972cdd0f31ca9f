"""The DINO projection head: MLP, L2-normalised bottleneck, weight-normalised prototypes (Caron et al., 2021)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class DINOHead(nn.Module):
    """Map features (N x D) to prototype logits (N x num_prototypes).

    Three linear layers with GELU give a bottleneck vector, which is L2-normalised and scored
    against the prototypes: a linear layer whose weight rows are normalised to length 1 (weight
    normalisation with the gain fixed at 1, as in DINO).
    """

    def __init__(self, in_dim: int, num_prototypes: int, hidden_dim: int = 2048, bottleneck_dim: int = 256):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(in_dim, hidden_dim), nn.GELU(),
            nn.Linear(hidden_dim, hidden_dim), nn.GELU(),
            nn.Linear(hidden_dim, bottleneck_dim),
        )
        for module in self.mlp:
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
        # Direction of each prototype; its norm is divided out in forward, so only the direction is learnt.
        self.prototypes = nn.Parameter(torch.empty(num_prototypes, bottleneck_dim))
        nn.init.trunc_normal_(self.prototypes, std=0.02)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        bottleneck = F.normalize(self.mlp(features), dim=-1, eps=1e-6)  # N x bottleneck_dim
        prototypes = F.normalize(self.prototypes, dim=-1, eps=1e-6)  # K x bottleneck_dim
        return bottleneck @ prototypes.t()  # N x K
