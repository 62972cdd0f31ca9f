"""Conversion of Segment Anything checkpoints (`sam_vit_b_01ec64.pth` and fine-tunes such as MedSAM).

SAM stores the whole model: `image_encoder.*` (the ViT this package uses), `prompt_encoder.*` and
`mask_decoder.*`. The image encoder differs from timm's VisionTransformerSAM only in the MLP names
(`mlp.lin1/lin2` instead of `mlp.fc1/fc2`).
"""

from __future__ import annotations

import torch

from .base import Conversion

_ENCODER_PREFIX = "image_encoder."
_IGNORED_PARTS = {
    "prompt_encoder.": "SAM prompt encoder, not used because this package uses only the image encoder",
    "mask_decoder.": "SAM mask decoder, which nnU-Net's decoder replaces",
    "pixel_mean": "SAM input normalisation constant, which the encoder's own input normalisation replaces",
    "pixel_std": "SAM input normalisation constant, which the encoder's own input normalisation replaces",
}


def convert_sam(state: dict[str, torch.Tensor], conversion: Conversion) -> None:
    """Convert a SAM state dict to encoder keys, ignoring the prompt encoder and mask decoder."""
    for key, value in state.items():
        if key.startswith(_ENCODER_PREFIX):
            name = key[len(_ENCODER_PREFIX):]
            name = name.replace(".mlp.lin1.", ".mlp.fc1.").replace(".mlp.lin2.", ".mlp.fc2.")
            conversion.add("vit." + name, value, key)
            continue

        reason = next((why for part, why in _IGNORED_PARTS.items() if key.startswith(part)), None)
        conversion.ignore(key, reason or "not part of SAM's image encoder")

    conversion.note("Renamed SAM keys: 'image_encoder.' -> 'vit.', 'mlp.lin1/lin2' -> 'mlp.fc1/fc2'.")
