"""Types shared by the checkpoint readers: the error class, the read result and its builder."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

LAYOUTS = ("mricore_dinov2", "sam", "mricore_nnunet", "timm", "nnunet")

LAYOUT_DESCRIPTIONS = {
    "mricore_dinov2": "official MRI-CORE release (DINOv2 teacher/student, keys 'backbone.*')",
    "sam": "Segment Anything (keys 'image_encoder.*')",
    "mricore_nnunet": "this package's encoder checkpoint (format 'mricore_nnunet.encoder', keys 'vit.*')",
    "timm": "timm VisionTransformerSAM state dict (keys 'patch_embed.*', 'blocks.*', 'neck.*')",
    "nnunet": "nnU-Net v2 training checkpoint of an MRI-CORE network ('network_weights' with '...vit.*' keys)",
}

OWN_FORMAT = "mricore_nnunet.encoder"
OWN_FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """Error for a checkpoint file that cannot be read or does not fit the encoder. The message names the file."""


@dataclasses.dataclass
class LoadedCheckpoint:
    """One checkpoint file, converted to the encoder's own key names but not yet to its shapes.

    Attributes:
        path: the file read.
        layout: one of `LAYOUTS`.
        state_dict: tensors under `MRICoreEncoder` key names (`vit.`-prefixed), with the shapes
            found in the file, except a DINOv2 token-list position embedding, which is already
            reshaped to its 1 x h x w x D grid.
        metadata: architecture and provenance stored in the file, empty where the layout has none.
        notes: what was done at read time (nesting used, prefixes stripped, tensors reshaped).
        ignored: (key, reason) for every tensor or entry of the file that is not used.
        source_keys: for each key of `state_dict`, the key it has in the file.
        sha256: hex digest of the file.
    """

    path: Path
    layout: str
    state_dict: dict[str, torch.Tensor]
    metadata: dict[str, Any]
    notes: list[str]
    ignored: list[tuple[str, str]]
    source_keys: dict[str, str]
    sha256: str


class Conversion:
    """Collects the converted tensors, their source keys, notes and ignored keys of one file."""

    def __init__(self, path: Path):
        self.path = path
        self.state_dict: dict[str, torch.Tensor] = {}
        self.source_keys: dict[str, str] = {}
        self.notes: list[str] = []
        self.ignored: list[tuple[str, str]] = []

    def add(self, key: str, tensor: torch.Tensor, source_key: str) -> None:
        if key in self.state_dict:
            raise CheckpointError(
                f"{self.path}: both '{self.source_keys[key]}' and '{source_key}' map to the encoder key "
                f"'{key}'. The file mixes two layouts or two models, so save one model's weights per file."
            )
        self.state_dict[key] = tensor
        self.source_keys[key] = source_key

    def ignore(self, key: str, reason: str) -> None:
        self.ignored.append((key, reason))

    def note(self, text: str) -> None:
        self.notes.append(text)


def strip_prefixes(state: dict[str, Any], conversion: Conversion, dict_name: str) -> dict[str, Any]:
    """Strip `module.` (DistributedDataParallel) and `_orig_mod.` (torch.compile) from the key starts.

    A prefix is stripped only when every key carries it, so a model that happens to contain a
    submodule named `module` is left alone.
    """
    for prefix, origin in (("module.", "DistributedDataParallel"), ("_orig_mod.", "torch.compile")):
        while state and all(isinstance(key, str) and key.startswith(prefix) for key in state):
            state = {key[len(prefix):]: value for key, value in state.items()}
            conversion.note(f"Stripped the '{prefix}' prefix that {origin} adds from the {dict_name} keys.")
    return state


def first_keys(state: Any, count: int = 8) -> str:
    """Return the first `count` keys of a dict as text for error messages."""
    if not isinstance(state, dict):
        return f"(not a dict but a {type(state).__name__})"
    if not state:
        return "(no keys)"
    keys = [repr(key) for key in list(state)[:count]]
    more = f", ... ({len(state)} keys in all)" if len(state) > count else ""
    return ", ".join(keys) + more
