"""The segmentation network: the MRI-CORE encoder with a UNETR-style convolutional decoder.

The network is built from plain keyword arguments, so nnU-Net rebuilds it from the plans alone
(`get_network_from_plans` calls it with `input_channels`, `num_classes`, `deep_supervision` and the
plans' `arch_kwargs`). Weights of a pretrained encoder are loaded by the trainer, never here.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from mricore_nnunet.encoder import MRICoreEncoder, default_feature_indices
from mricore_nnunet.finetune import FINETUNE_MODES, apply_finetune_mode

# Four decoder levels below the encoder's 1/16 grid: full, 1/2, 1/4 and 1/8 resolution.
NUM_DECODER_LEVELS = 4
DEFAULT_DECODER_CHANNELS = (32, 64, 128, 256)

# Resolution steps between the decoder's outputs. nnU-Net reads them as `pool_op_kernel_sizes`
# (from arch_kwargs["strides"]) to scale the targets for deep supervision.
DECODER_STRIDES = [[1, 1], [2, 2], [2, 2], [2, 2], [2, 2]]


class ConvBlock(nn.Sequential):
    """Two 3x3 convolutions, each followed by instance norm and leaky ReLU, as in nnU-Net's U-Net."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            nn.InstanceNorm2d(out_channels, affine=True),
            nn.LeakyReLU(0.01, inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.InstanceNorm2d(out_channels, affine=True),
            nn.LeakyReLU(0.01, inplace=True),
        )


class TokenUpsampler(nn.Sequential):
    """Bring ViT tokens from the 1/16 grid up by 2**num_steps with transposed convolutions (UNETR)."""

    def __init__(self, in_channels: int, out_channels: int, num_steps: int):
        layers: list[nn.Module] = []
        channels = in_channels
        for _ in range(num_steps):
            layers += [nn.ConvTranspose2d(channels, out_channels, 2, stride=2), ConvBlock(out_channels, out_channels)]
            channels = out_channels
        super().__init__(*layers)


class UNETRDecoder(nn.Module):
    """Decoder over one neck output and three intermediate ViT block outputs plus the image itself.

    Skip connections: block features at 1/8, 1/4 and 1/2 resolution (upsampled from the 1/16 token
    grid) and a light convolutional path on the normalised image at full resolution, which gives the
    sharp boundaries that 16-pixel tokens cannot.
    """

    def __init__(
        self,
        embed_dim: int,
        neck_chans: int,
        image_chans: int,
        num_classes: int,
        channels: Sequence[int] = DEFAULT_DECODER_CHANNELS,
        deep_supervision: bool = False,
    ):
        super().__init__()
        if len(channels) != NUM_DECODER_LEVELS:
            raise ValueError(f"decoder_channels needs {NUM_DECODER_LEVELS} values (full, 1/2, 1/4, 1/8), got {channels}.")
        self.deep_supervision = deep_supervision

        c0, c1, c2, c3 = channels
        self.image_path = ConvBlock(image_chans, c0)
        # Skips from the three intermediate blocks, shallowest to the finest level.
        self.skip_half = TokenUpsampler(embed_dim, c1, 3)
        self.skip_quarter = TokenUpsampler(embed_dim, c2, 2)
        self.skip_eighth = TokenUpsampler(embed_dim, c3, 1)

        self.up = nn.ModuleList([
            nn.ConvTranspose2d(neck_chans, c3, 2, stride=2),
            nn.ConvTranspose2d(c3, c2, 2, stride=2),
            nn.ConvTranspose2d(c2, c1, 2, stride=2),
            nn.ConvTranspose2d(c1, c0, 2, stride=2),
        ])
        self.merge = nn.ModuleList([ConvBlock(2 * c, c) for c in (c3, c2, c1, c0)])
        # Heads from the finest level to the coarsest; only the first is used without deep supervision.
        self.seg_heads = nn.ModuleList([nn.Conv2d(c, num_classes, 1) for c in (c0, c1, c2, c3)])

    def forward(
        self, image: torch.Tensor, neck: torch.Tensor, block_features: Sequence[torch.Tensor]
    ) -> torch.Tensor | list[torch.Tensor]:
        shallow, middle, deep = block_features
        skips = [self.skip_eighth(deep), self.skip_quarter(middle), self.skip_half(shallow), self.image_path(image)]

        x = neck  # B x neck_chans x H/16 x W/16
        levels = []
        for up, merge, skip in zip(self.up, self.merge, skips):
            x = merge(torch.cat([up(x), skip], dim=1))
            levels.append(x)
        # levels: 1/8, 1/4, 1/2, full resolution.

        if not self.deep_supervision:
            return self.seg_heads[0](levels[-1])
        return [head(level) for head, level in zip(self.seg_heads, reversed(levels))]


class MRICoreSegmentationNetwork(nn.Module):
    """MRI-CORE encoder plus UNETR-style decoder, returning logits at the full patch resolution.

    Args:
        input_channels: image channels (nnU-Net passes this from dataset.json).
        num_classes: output channels (nnU-Net's segmentation heads: classes, or regions).
        deep_supervision: if True, `forward` returns logits at full, 1/2, 1/4 and 1/8 resolution.
        preset: encoder preset name (see `mricore_nnunet.encoder.PRESETS`).
        img_size: side of the square patch the encoder's position embedding is sized for.
        normalization: the encoder's input normalisation, from the checkpoint metadata.
        decoder_channels: channels at full, 1/2, 1/4 and 1/8 resolution.
        feature_indices: the encoder blocks feeding the decoder; the last one goes through the neck.
        finetune: "full", "frozen", "adapter" or "lora" (see `mricore_nnunet.finetune`).
        finetune_kwargs: options of the fine-tuning mode, such as the LoRA rank.
        strides: resolution steps between decoder outputs; accepted because nnU-Net reads it from
            the plans for deep supervision, and checked against the decoder's fixed layout.
        drop_path_rate: stochastic depth in the encoder.
        gradient_checkpointing: recompute encoder block activations in the backward pass instead of
            storing them, which trades about a third more compute for far less training memory.
    """

    def __init__(
        self,
        input_channels: int,
        num_classes: int,
        deep_supervision: bool = False,
        preset: str = "vit_b",
        img_size: int = 256,
        normalization: dict[str, Any] | None = None,
        decoder_channels: Sequence[int] = DEFAULT_DECODER_CHANNELS,
        feature_indices: Sequence[int] | None = None,
        finetune: str = "full",
        finetune_kwargs: dict[str, Any] | None = None,
        strides: Sequence[Sequence[int]] | None = None,
        drop_path_rate: float = 0.0,
        gradient_checkpointing: bool = False,
    ):
        super().__init__()
        if strides is not None and [list(s) for s in strides] != DECODER_STRIDES:
            raise ValueError(f"arch_kwargs 'strides' must be {DECODER_STRIDES} for this decoder, got {strides}.")
        if finetune not in FINETUNE_MODES:
            raise ValueError(f"Unknown fine-tuning mode {finetune!r}; choose one of {FINETUNE_MODES}.")

        self.encoder = MRICoreEncoder(preset, img_size, input_channels, normalization, drop_path_rate)
        depth = self.encoder.depth
        self.feature_indices = tuple(feature_indices) if feature_indices else default_feature_indices(depth)
        if len(self.feature_indices) != 4 or max(self.feature_indices) >= depth:
            raise ValueError(
                f"feature_indices must name 4 blocks of the {depth}-block encoder, got {self.feature_indices}."
            )

        self.decoder = UNETRDecoder(
            embed_dim=self.encoder.embed_dim,
            neck_chans=self.encoder.out_chans,
            image_chans=self.encoder.input_norm.out_chans,
            num_classes=num_classes,
            channels=decoder_channels,
            deep_supervision=deep_supervision,
        )
        self.finetune = finetune
        apply_finetune_mode(self.encoder, finetune, **(finetune_kwargs or {}))
        self.encoder.vit.set_grad_checkpointing(gradient_checkpointing)

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        # The decoder's image path receives the same normalised image as the encoder.
        self.encoder.check_input(x)
        image = self.encoder.input_norm(x)
        neck, features = self.encoder.vit.forward_intermediates(image, indices=list(self.feature_indices))
        return self.decoder(image, neck, features[:3])
