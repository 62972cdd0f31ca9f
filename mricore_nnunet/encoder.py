"""The MRI-CORE image encoder: timm's SAM ViT with named presets and the checkpoint's input path.

MRI-CORE (arXiv 2506.12186) uses the Segment Anything ViT-B image encoder: 16-pixel patches, window
attention in every block but the global blocks 2, 5, 8 and 11, and a convolutional neck to 256
channels. This module does not depend on nnU-Net and reads no checkpoint files;
`mricore_nnunet.checkpoints` fills the weights.
"""

from __future__ import annotations

import dataclasses
import logging
from functools import partial
from typing import Any, Sequence

import torch
from torch import nn
from timm.models.vision_transformer_sam import VisionTransformerSAM

logger = logging.getLogger(__name__)

PATCH_SIZE = 16

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# The input path MRI-CORE was trained with: each slice scaled to [0, 1] by its own minimum and maximum,
# grey replicated to the three channels of the patch embedding, then ImageNet mean and std.
MINMAX_IMAGENET = {"scheme": "minmax_imagenet", "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}
NORMALIZATION_SCHEMES = ("minmax_imagenet", "none")


@dataclasses.dataclass(frozen=True)
class EncoderPreset:
    """Architecture of one named encoder configuration."""

    embed_dim: int
    depth: int
    num_heads: int
    window_size: int
    global_attn_indexes: tuple[int, ...]
    neck_chans: int
    use_rel_pos: bool = False
    mlp_ratio: float = 4.0


PRESETS: dict[str, EncoderPreset] = {
    # The MRI-CORE architecture. The official checkpoint was trained with absolute position
    # embeddings only, so the relative-position tables of SAM are left out.
    "vit_b": EncoderPreset(768, 12, 12, 14, (2, 5, 8, 11), 256),
    # Segment Anything's own ViT-B, with decomposed relative position in attention.
    "sam_vit_b": EncoderPreset(768, 12, 12, 14, (2, 5, 8, 11), 256, use_rel_pos=True),
    # A smaller encoder for pre-training experiments on one GPU.
    "small": EncoderPreset(384, 12, 6, 14, (2, 5, 8, 11), 256),
    # For tests and CPU demos: about 0.5 M parameters, 15 ms per 256 px slice on 2 CPU cores.
    "tiny": EncoderPreset(96, 4, 3, 8, (1, 3), 64),
}


def get_preset(name: str | EncoderPreset) -> EncoderPreset:
    """Look up a preset by name, with an error that lists the known ones; a preset object passes through."""
    if isinstance(name, EncoderPreset):
        return name
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"Unknown encoder preset {name!r}; choose one of {sorted(PRESETS)}.") from None


def check_input_size(height: int, width: int) -> None:
    """Raise ValueError unless both sides are positive multiples of the 16-pixel patch size."""
    for side in (height, width):
        if side <= 0 or side % PATCH_SIZE:
            raise ValueError(
                f"Encoder input of {height}x{width} pixels: both sides must be positive multiples of "
                f"{PATCH_SIZE}. Pad or resample the slice, or plan with a patch size such as "
                f"{max(PATCH_SIZE, -(-side // PATCH_SIZE) * PATCH_SIZE)}."
            )


def default_feature_indices(depth: int) -> tuple[int, ...]:
    """Return four block indices spread evenly over the depth: (2, 5, 8, 11) for 12 blocks."""
    return tuple(sorted({max(0, depth * k // 4 - 1) for k in (1, 2, 3, 4)}))


def patch_embed_channels(in_chans: int) -> int:
    """Return how many channels the patch embedding takes for `in_chans` image channels.

    One grey channel is replicated to three, exactly as the pretrained encoders received it. Any other
    channel count gets its own patch embedding, adapted from the pretrained three-channel one.
    """
    return 3 if in_chans in (1, 3) else in_chans


class InputNormalization(nn.Module):
    """Scale each image channel the way the checkpoint's training did, inside the model.

    Keeping this in the model means training and inference cannot disagree on it, whatever
    normalisation came before. nnU-Net's z-score is an affine map, and per-slice min-max scaling
    undoes any affine map, so the result is the same as min-max scaling of the raw scan.
    """

    def __init__(self, in_chans: int, normalization: dict[str, Any] | None = None, eps: float = 1e-6):
        super().__init__()
        normalization = dict(MINMAX_IMAGENET if normalization is None else normalization)
        scheme = normalization.get("scheme")
        if scheme not in NORMALIZATION_SCHEMES:
            raise ValueError(f"Unknown input normalisation {scheme!r}; choose one of {NORMALIZATION_SCHEMES}.")

        self.in_chans = in_chans
        self.out_chans = patch_embed_channels(in_chans)
        self.scheme = scheme
        self.eps = eps
        self.normalization = normalization

        mean = normalization.get("mean", IMAGENET_MEAN)
        std = normalization.get("std", IMAGENET_STD)
        if len(mean) != self.out_chans:
            # A patch embedding adapted to other than three channels normalises each channel like
            # the average ImageNet channel.
            mean = [sum(mean) / len(mean)] * self.out_chans
            std = [sum(std) / len(std)] * self.out_chans
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != self.in_chans:
            raise ValueError(f"Expected {self.in_chans} input channels, got a tensor of shape {tuple(x.shape)}.")

        if self.scheme == "minmax_imagenet":
            # B x C x H x W: minimum and maximum per image and channel.
            low = x.amin(dim=(2, 3), keepdim=True)
            high = x.amax(dim=(2, 3), keepdim=True)
            x = (x - low) / (high - low).clamp_min(self.eps)

        if self.out_chans != self.in_chans:
            x = x.expand(-1, self.out_chans, -1, -1)

        if self.scheme == "minmax_imagenet":
            x = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        return x


class MRICoreEncoder(nn.Module):
    """SAM-architecture ViT image encoder with the checkpoint's input normalisation in front.

    Args:
        preset: name of an entry in `PRESETS` (`vit_b` is the MRI-CORE architecture), or an
            `EncoderPreset` for an architecture without a name (named "custom" in metadata).
        img_size: side of the square input the position embedding is sized for, a multiple of 16.
            Other multiples of 16 work at forward time through interpolation of the embedding.
        in_chans: number of image channels given to `forward`.
        normalization: the input path, as stored in checkpoint metadata; MRI-CORE's by default.
        drop_path_rate: stochastic depth rate for fine-tuning.
    """

    def __init__(
        self,
        preset: str | EncoderPreset = "vit_b",
        img_size: int = 256,
        in_chans: int = 1,
        normalization: dict[str, Any] | None = None,
        drop_path_rate: float = 0.0,
    ):
        super().__init__()
        check_input_size(img_size, img_size)
        self.preset = get_preset(preset)
        self.preset_name = preset if isinstance(preset, str) else "custom"
        self.img_size = img_size
        self.in_chans = in_chans

        self.input_norm = InputNormalization(in_chans, normalization)
        self.normalization = self.input_norm.normalization
        if in_chans == 1:
            logger.debug("One input channel: grey is replicated to the 3 channels of the patch embedding.")

        p = self.preset
        self.vit = VisionTransformerSAM(
            img_size=img_size,
            patch_size=PATCH_SIZE,
            in_chans=self.input_norm.out_chans,
            num_classes=0,
            global_pool="",
            embed_dim=p.embed_dim,
            depth=p.depth,
            num_heads=p.num_heads,
            mlp_ratio=p.mlp_ratio,
            window_size=p.window_size,
            global_attn_indexes=p.global_attn_indexes,
            use_rel_pos=p.use_rel_pos,
            neck_chans=p.neck_chans,
            drop_path_rate=drop_path_rate,
            # Segment Anything and MRI-CORE build their blocks with this epsilon; timm's default is 1e-5.
            norm_layer=partial(nn.LayerNorm, eps=1e-6),
        )
        nn.init.trunc_normal_(self.vit.pos_embed, std=0.02)

    @property
    def embed_dim(self) -> int:
        return self.preset.embed_dim

    @property
    def depth(self) -> int:
        return self.preset.depth

    @property
    def out_chans(self) -> int:
        return self.preset.neck_chans

    def describe(self) -> dict[str, Any]:
        """Return the architecture and input path, as written into checkpoint metadata."""
        return {
            "preset": self.preset_name,
            "img_size": self.img_size,
            "in_chans": self.in_chans,
            "patch_size": PATCH_SIZE,
            "normalization": self.normalization,
            **dataclasses.asdict(self.preset),
        }

    def layer_id(self, param_name: str) -> int:
        """Return the depth of a parameter for layer-wise learning-rate decay.

        0 is the patch and position embedding, 1..depth the transformer blocks, depth + 1 the neck.
        `param_name` is relative to this module.
        """
        name = param_name.removeprefix("vit.")
        if name.startswith(("patch_embed", "pos_embed")):
            return 0
        if name.startswith("blocks."):
            return int(name.split(".")[1]) + 1
        return self.depth + 1

    def check_input(self, x: torch.Tensor) -> None:
        """Raise ValueError unless `x` is B x C x H x W with H and W multiples of 16."""
        if x.ndim != 4:
            raise ValueError(f"Expected a B x C x H x W tensor, got shape {tuple(x.shape)}.")
        check_input_size(x.shape[2], x.shape[3])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map B x C x H x W images to B x neck_chans x H/16 x W/16 features."""
        self.check_input(x)
        return self.vit.forward_features(self.input_norm(x))

    def forward_intermediates(
        self, x: torch.Tensor, indices: Sequence[int]
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Return the neck output and the B x embed_dim x H/16 x W/16 outputs of the given blocks."""
        self.check_input(x)
        return self.vit.forward_intermediates(self.input_norm(x), indices=list(indices))
