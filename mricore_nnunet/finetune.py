"""Fine-tuning modes of the encoder: full, frozen, bottleneck adapters and LoRA.

Adapters and LoRA add modules to the encoder, so the mode is part of the architecture: nnU-Net's
plans name it and inference builds the same modules before loading the trained weights. The added
layers start as the identity (zero-initialised up-projections), so fine-tuning starts exactly from
the pretrained encoder's features.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

logger = logging.getLogger(__name__)

FINETUNE_MODES = ("full", "frozen", "adapter", "lora")


class BottleneckAdapter(nn.Module):
    """Residual bottleneck MLP after a transformer block: x + up(GELU(down(x)))."""

    def __init__(self, dim: int, reduction: int = 4):
        super().__init__()
        self.down = nn.Linear(dim, dim // reduction)
        self.act = nn.GELU()
        self.up = nn.Linear(dim // reduction, dim)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.up(self.act(self.down(x)))


class AdaptedBlock(nn.Module):
    """A frozen transformer block followed by a trainable adapter."""

    def __init__(self, block: nn.Module, dim: int, reduction: int = 4):
        super().__init__()
        self.block = block
        self.adapter = BottleneckAdapter(dim, reduction)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.adapter(self.block(x))


class LoRALinear(nn.Module):
    """A frozen linear layer plus a trainable low-rank update: W x + (alpha / r) B A x (Hu et al., 2021)."""

    def __init__(self, base: nn.Linear, rank: int = 8, alpha: float = 16.0):
        super().__init__()
        if rank < 1:
            raise ValueError(f"LoRA rank must be at least 1, got {rank}.")
        self.base = base
        self.lora_a = nn.Linear(base.in_features, rank, bias=False)
        self.lora_b = nn.Linear(rank, base.out_features, bias=False)
        self.scaling = alpha / rank
        nn.init.kaiming_uniform_(self.lora_a.weight, a=5**0.5)
        nn.init.zeros_(self.lora_b.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + self.lora_b(self.lora_a(x)) * self.scaling


def default_adapter_blocks(depth: int) -> tuple[int, ...]:
    """Return the first two and last two blocks: (0, 1, 10, 11) for 12 blocks, as in the MRI-CORE recipe."""
    return tuple(sorted({0, min(1, depth - 1), max(0, depth - 2), depth - 1}))


def apply_finetune_mode(
    encoder: nn.Module,
    mode: str,
    adapter_blocks: tuple[int, ...] | None = None,
    adapter_reduction: int = 4,
    lora_rank: int = 8,
    lora_alpha: float = 16.0,
) -> None:
    """Change `encoder` (an `MRICoreEncoder`) in place for a fine-tuning mode and freeze what it keeps fixed.

    - "full" trains everything.
    - "frozen" trains nothing of the encoder.
    - "adapter" trains adapters after `adapter_blocks`, and the neck.
    - "lora" trains low-rank updates of every attention qkv projection, and the neck.

    Call this before loading trained weights of an adapted network, since it adds parameters.
    """
    if mode not in FINETUNE_MODES:
        raise ValueError(f"Unknown fine-tuning mode {mode!r}; choose one of {FINETUNE_MODES}.")
    if mode == "full":
        return

    for parameter in encoder.parameters():
        parameter.requires_grad_(False)
    if mode == "frozen":
        return

    vit = encoder.vit
    if mode == "adapter":
        blocks = adapter_blocks if adapter_blocks is not None else default_adapter_blocks(len(vit.blocks))
        for index in blocks:
            if not 0 <= index < len(vit.blocks):
                raise ValueError(f"Adapter block {index} does not exist in a {len(vit.blocks)}-block encoder.")
            vit.blocks[index] = AdaptedBlock(vit.blocks[index], vit.embed_dim, adapter_reduction)
        logger.info("Adapters after encoder blocks %s; the rest of the encoder is frozen.", list(blocks))
    else:
        for block in vit.blocks:
            block.attn.qkv = LoRALinear(block.attn.qkv, lora_rank, lora_alpha)
        logger.info("LoRA (rank %d) on the qkv projection of all %d blocks; the rest is frozen.", lora_rank, len(vit.blocks))

    for parameter in vit.neck.parameters():
        parameter.requires_grad_(True)


def _plain_name(name: str) -> str:
    """Map a parameter name of an adapted encoder to the plain encoder's name, or '' if it is new."""
    if ".adapter." in name or ".lora_a." in name or ".lora_b." in name:
        return ""
    return name.replace(".block.", ".").replace(".qkv.base.", ".qkv.")


def load_plain_encoder_state(encoder: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy a plain encoder's state dict into `encoder`, which may carry adapters or LoRA layers.

    Every tensor of `state` must have a place in `encoder`, and every pretrained tensor of `encoder`
    must be filled. The added adapter and LoRA parameters keep their identity initialisation.
    """
    targets = {}
    for name, tensor in encoder.state_dict().items():
        plain = _plain_name(name)
        if plain:
            targets[plain] = name
    missing = sorted(set(targets) - set(state))
    unexpected = sorted(set(state) - set(targets))
    if missing or unexpected:
        raise ValueError(
            f"Encoder weights do not fit the network's encoder: missing {missing[:5]}, unexpected {unexpected[:5]}."
        )
    encoder.load_state_dict({targets[k]: v for k, v in state.items()}, strict=False)
