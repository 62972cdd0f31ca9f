"""Layouts that already use timm's key names: this package's own file, a bare timm state dict and
an nnU-Net v2 training checkpoint of an MRI-CORE network. Also writes this package's own file.

Own layout, written by `save_encoder_checkpoint`:

    {"format": "mricore_nnunet.encoder", "version": 1,
     "metadata": {**encoder.describe(), **extra_metadata},
     "state_dict": encoder.state_dict()}
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch

from ..atomic import atomic_torch_save
from ..encoder import MRICoreEncoder
from .base import OWN_FORMAT, OWN_FORMAT_VERSION, CheckpointError, Conversion, first_keys, strip_prefixes

logger = logging.getLogger(__name__)

_ENCODER_ANCHOR = "vit.patch_embed.proj.weight"


def convert_own(payload: dict[str, Any], conversion: Conversion) -> dict[str, Any]:
    """Convert this package's own checkpoint and return its metadata."""
    version = payload.get("version")
    if version != OWN_FORMAT_VERSION:
        raise CheckpointError(
            f"{conversion.path}: encoder checkpoint format version {version!r}, but this mricore_nnunet "
            f"reads version {OWN_FORMAT_VERSION}. Update mricore_nnunet to the release that wrote the file."
        )

    state = payload.get("state_dict")
    metadata = payload.get("metadata")
    if not isinstance(state, dict) or not isinstance(metadata, dict):
        raise CheckpointError(
            f"{conversion.path}: a '{OWN_FORMAT}' file needs a 'state_dict' dict and a 'metadata' dict, but "
            f"found {type(state).__name__} and {type(metadata).__name__}. The file is damaged, so save the encoder again."
        )

    for key in payload:
        if key not in ("format", "version", "metadata", "state_dict"):
            conversion.ignore(key, "entry outside the encoder checkpoint format")

    state = strip_prefixes(state, conversion, "state dict")
    convert_bare(state, conversion)
    return dict(metadata)


def convert_bare(state: dict[str, torch.Tensor], conversion: Conversion) -> None:
    """Take a state dict that already uses `MRICoreEncoder` key names."""
    for key, value in state.items():
        conversion.add(key, value, key)


def convert_timm(state: dict[str, torch.Tensor], conversion: Conversion) -> None:
    """Convert a timm VisionTransformerSAM state dict by adding the `vit.` prefix."""
    for key, value in state.items():
        if key.startswith("head."):
            conversion.ignore(key, "timm classifier head, which the encoder does not have because it returns features")
            continue
        conversion.add("vit." + key, value, key)
    conversion.note("Added the 'vit.' prefix to the timm VisionTransformerSAM keys.")


def convert_nnunet(payload: dict[str, Any], conversion: Conversion) -> dict[str, Any]:
    """Convert the encoder of an nnU-Net v2 training checkpoint and return its training metadata."""
    weights = strip_prefixes(payload["network_weights"], conversion, "network_weights")

    anchors = [key for key in weights if isinstance(key, str) and key.endswith(_ENCODER_ANCHOR)]
    if len(anchors) != 1:
        problem = "no key ends" if not anchors else f"{len(anchors)} keys end"
        raise CheckpointError(
            f"{conversion.path}: an nnU-Net v2 checkpoint, but {problem} in '{_ENCODER_ANCHOR}', so it does "
            f"not contain exactly one MRI-CORE encoder. It was trained with another network. "
            f"First keys of 'network_weights': {first_keys(weights)}."
        )
    prefix = anchors[0][: -len(_ENCODER_ANCHOR)]

    for key, value in weights.items():
        if key.startswith(prefix + "vit."):
            conversion.add(key[len(prefix):], value, "network_weights." + key)
        else:
            conversion.ignore("network_weights." + key, "nnU-Net network outside the encoder (decoder, segmentation heads)")
    conversion.note(f"Took the encoder from 'network_weights' keys starting with '{prefix}vit.'.")

    for key in payload:
        if key != "network_weights":
            conversion.ignore(key, "nnU-Net training state, not encoder weights")

    init_args = payload.get("init_args") if isinstance(payload.get("init_args"), dict) else {}
    metadata = {
        "trainer_name": payload.get("trainer_name"),
        "current_epoch": payload.get("current_epoch"),
        "configuration": init_args.get("configuration"),
        "fold": init_args.get("fold"),
        "encoder_prefix": prefix,
    }
    return {key: value for key, value in metadata.items() if value is not None}


def save_encoder_checkpoint(
    encoder: MRICoreEncoder, path: str | os.PathLike, extra_metadata: dict[str, Any] | None = None
) -> Path:
    """Write the encoder in this package's own layout and return the path.

    The file is written to a temporary file in the same folder and then renamed over `path`, so
    a reader never sees a half-written checkpoint. `extra_metadata` must contain only plain
    values (str, int, float, bool, None, and lists, tuples and str-keyed dicts of them) because
    `torch.load(weights_only=True)` reads nothing else back.
    """
    path = Path(path)
    metadata = encoder.describe()
    for key, value in (extra_metadata or {}).items():
        if key in metadata:
            raise ValueError(
                f"extra_metadata key {key!r} would overwrite the encoder's own metadata. Rename it. "
                f"Reserved keys: {sorted(metadata)}."
            )
        _check_plain(value, f"extra_metadata[{key!r}]")
        metadata[key] = value

    payload = {
        "format": OWN_FORMAT,
        "version": OWN_FORMAT_VERSION,
        "metadata": metadata,
        "state_dict": {key: tensor.detach().cpu() for key, tensor in encoder.state_dict().items()},
    }

    atomic_torch_save(payload, path)

    logger.info("Saved encoder checkpoint %s (preset %s, img_size %d).", path, encoder.preset_name, encoder.img_size)
    return path


def _check_plain(value: Any, where: str) -> None:
    if value is None or isinstance(value, (str, int, float, bool)):
        return
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _check_plain(item, f"{where}[{index}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"{where} has the non-string key {key!r}. Use string keys.")
            _check_plain(item, f"{where}[{key!r}]")
        return
    raise ValueError(
        f"{where} is a {type(value).__name__}, which torch.load(weights_only=True) cannot read back. "
        "Convert it to str, int, float, bool, None, or a list or dict of those."
    )
