"""Conversion of the official MRI-CORE release: a DINOv2 teacher or student around a SAM ViT backbone.

Key layout (after the nesting under `teacher`/`student`/`model` is removed):

    backbone.patch_embed.proj.{weight,bias}
    backbone.pos_embed                       1 x (1 + g*g) x D: class token, then a g x g grid
    backbone.blocks.<i>.<module>...          flat blocks
    backbone.blocks.<chunk>.<i>.<module>...  DINOv2 BlockChunk, where <i> is the global block index
    backbone.{cls_token,mask_token,register_tokens,norm.*}
    dino_head.*, ibot_head.*

Some files contain an extracted backbone without the `backbone.` prefix, which `prefix=""` reads.
"""

from __future__ import annotations

import math
import re

import torch

from .base import CheckpointError, Conversion

# Entries of a DINOv2 model that have no counterpart in the SAM image encoder, with the reason.
_IGNORED_HEADS = {
    "dino_head.": "DINOv2 projection head, used only by the self-distillation loss",
    "ibot_head.": "iBOT projection head, used only by the masked-patch loss",
}
_IGNORED_BACKBONE = {
    "mask_token": "mask token, used only for masked-patch training",
    "cls_token": "class token, which the SAM encoder does not have",
    "register_tokens": "register tokens, which the SAM encoder does not have",
    "norm.": "final norm of the DINOv2 backbone, which the SAM encoder does not have (its blocks feed the neck directly)",
}

_CHUNKED_BLOCK = re.compile(r"^blocks\.(\d+)\.(\d+)\.(.+)$")
_LAYER_SCALE = re.compile(r"^blocks\.(\d+)\.(ls[12])\.gamma$")


def convert_dinov2(state: dict[str, torch.Tensor], conversion: Conversion, prefix: str = "backbone.") -> None:
    """Convert a DINOv2 state dict with a SAM ViT backbone under `prefix` to encoder keys."""
    layer_scales: dict[tuple[int, str], tuple[torch.Tensor, str]] = {}
    chunked = False

    for key, value in state.items():
        head_reason = next((why for head, why in _IGNORED_HEADS.items() if key.startswith(head)), None)
        if head_reason is not None:
            conversion.ignore(key, head_reason)
            continue
        if not key.startswith(prefix):
            conversion.ignore(key, "outside the DINOv2 backbone")
            continue

        name = key[len(prefix):]
        reason = next(
            (why for part, why in _IGNORED_BACKBONE.items() if name == part or (part.endswith(".") and name.startswith(part))),
            None,
        )
        if reason is not None:
            conversion.ignore(key, reason)
            continue

        if name == "pos_embed":
            conversion.add("vit.pos_embed", _token_list_to_grid(value, key, conversion), key)
            continue

        match = _CHUNKED_BLOCK.match(name)
        if match:
            # BlockChunk pads each chunk with Identity modules so that the inner index is the
            # block's index in the whole model. The chunk index is redundant.
            chunked = True
            name = f"blocks.{match.group(2)}.{match.group(3)}"

        scale = _LAYER_SCALE.match(name)
        if scale:
            layer_scales[(int(scale.group(1)), scale.group(2))] = (value, key)
            continue

        conversion.add("vit." + name, value, key)

    renames = "'backbone.' -> 'vit.'" if prefix else "'vit.' prefix added"
    if chunked:
        renames += ", 'blocks.<chunk>.<i>.' -> 'blocks.<i>.' (DINOv2 BlockChunk)"
    conversion.note(f"Renamed DINOv2 backbone keys: {renames}.")

    for (block, scale_name), (gamma, gamma_key) in sorted(layer_scales.items()):
        _fold_layer_scale(conversion, block, scale_name, gamma, gamma_key)


def _token_list_to_grid(pos_embed: torch.Tensor, key: str, conversion: Conversion) -> torch.Tensor:
    """Drop the class-token entry of a 1 x (1 + g*g) x D position embedding and return 1 x g x g x D."""
    if pos_embed.ndim == 4:
        return pos_embed
    if pos_embed.ndim != 3 or pos_embed.shape[0] != 1:
        raise CheckpointError(
            f"{conversion.path}: '{key}' has shape {tuple(pos_embed.shape)}, but expected 1 x tokens x dim "
            "(DINOv2) or 1 x h x w x dim (SAM). The file is not an MRI-CORE checkpoint."
        )

    tokens = pos_embed.shape[1]
    side = math.isqrt(tokens - 1)
    if side * side == tokens - 1:
        grid = pos_embed[:, 1:]  # 1 x g*g x D
        conversion.ignore(f"{key}[:, 0]", "class-token entry of the position embedding, which the SAM encoder does not have")
        grid_text = f"a class token plus a {side}x{side} grid"
    else:
        side = math.isqrt(tokens)
        if side * side != tokens:
            raise CheckpointError(
                f"{conversion.path}: '{key}' contains {tokens} position tokens, which is neither a square "
                "grid nor a class token plus a square grid. The file is not an MRI-CORE checkpoint."
            )
        grid = pos_embed
        grid_text = f"a {side}x{side} grid without class token"

    grid = grid.reshape(1, side, side, pos_embed.shape[2])  # 1 x g x g x D (NHWC, as the SAM encoder)
    conversion.note(
        f"Reshaped '{key}' from {tuple(pos_embed.shape)} ({grid_text}) to the NHWC grid {tuple(grid.shape)}."
    )
    return grid


def _fold_layer_scale(conversion: Conversion, block: int, scale_name: str, gamma: torch.Tensor, gamma_key: str) -> None:
    """Multiply a DINOv2 layer-scale vector into the projection before it.

    The SAM block has no layer scale. `ls1(attn(x))` equals `attn(x)` with the rows of
    `attn.proj` scaled by gamma, and likewise `ls2` with `mlp.fc2`, so folding keeps the function.
    """
    layer = "attn.proj" if scale_name == "ls1" else "mlp.fc2"
    for param in ("weight", "bias"):
        key = f"vit.blocks.{block}.{layer}.{param}"
        if key not in conversion.state_dict:
            raise CheckpointError(
                f"{conversion.path}: '{gamma_key}' has no '{layer}.{param}' in the same block to fold into. "
                "The file is incomplete, so save the whole backbone again."
            )
        tensor = conversion.state_dict[key]
        if param == "weight":
            tensor = tensor * gamma.to(tensor.dtype)[:, None]  # out x in, one gamma per output row
        else:
            tensor = tensor * gamma.to(tensor.dtype)
        conversion.state_dict[key] = tensor
        conversion.source_keys[key] = f"{conversion.source_keys[key]} * {gamma_key}"
    conversion.note(f"Folded layer scale '{gamma_key}' into 'vit.blocks.{block}.{layer}' (the SAM block has no layer scale).")
