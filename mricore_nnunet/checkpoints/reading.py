"""Reading checkpoint files safely and detecting their layout.

This is the only module of the package that opens checkpoint files. Files are read with
`torch.load(weights_only=True)`, which restores tensors and plain containers but never runs
code stored in the pickle.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import re
from pathlib import Path
from typing import Any

import torch

from .base import (
    LAYOUT_DESCRIPTIONS,
    OWN_FORMAT,
    CheckpointError,
    Conversion,
    LoadedCheckpoint,
    first_keys,
    strip_prefixes,
)
from .dinov2 import convert_dinov2
from .native import convert_bare, convert_nnunet, convert_own, convert_timm
from .sam import convert_sam

# Keys under which training code nests the model weights, in order of preference. The DINOv2
# teacher is the exponential moving average of the student and is the model DINOv2 evaluates.
_NESTING_KEYS = ("teacher", "student", "model", "state_dict", "model_state_dict")
_ZIP_MAGIC = b"PK\x03\x04"
# torch.save's legacy (pre-1.6) format starts with a pickled long: PROTO 2, LONG1 of 10 bytes.
_LEGACY_TORCH_MAGIC = b"\x80\x02\x8a\x0a"
_PICKLE_PROTO = 0x80


def file_sha256(path: str | os.PathLike) -> str:
    """Return the hex SHA-256 digest of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_checkpoint(path: str | os.PathLike) -> LoadedCheckpoint:
    """Read a checkpoint of any supported layout and convert its keys to the encoder's own names.

    Shapes are left as found, apart from a DINOv2 position embedding, which becomes a grid.
    `load_encoder_weights` fits them to a given encoder. Raises CheckpointError for a missing
    file, a file that is not a PyTorch checkpoint, one that contains pickled Python objects, and
    one of unknown layout.
    """
    path = Path(path)
    payload = _load_file(path)
    conversion = Conversion(path)
    metadata: dict[str, Any] = {}

    if not isinstance(payload, dict):
        _raise_unknown_layout(path, payload)

    if payload.get("format") == OWN_FORMAT:
        layout = "mricore_nnunet"
        metadata = convert_own(payload, conversion)
    elif isinstance(payload.get("network_weights"), dict):
        layout = "nnunet"
        metadata = convert_nnunet(payload, conversion)
    else:
        _reject_nnunet_v1(path, payload)
        state = _select_weights(payload, conversion)
        state = strip_prefixes(state, conversion, "state dict")
        state = _drop_non_tensors(state, conversion)
        layout = _detect_layout(path, state)
        if layout == "sam":
            convert_sam(state, conversion)
        elif layout == "mricore_dinov2":
            prefix = "backbone." if any(key.startswith("backbone.") for key in state) else ""
            if not prefix:
                conversion.note("No 'backbone.' prefix: read as an extracted DINOv2 backbone.")
            convert_dinov2(state, conversion, prefix=prefix)
        elif layout == "timm":
            convert_timm(state, conversion)
        else:
            conversion.note("A bare MRICoreEncoder state dict without metadata.")
            convert_bare(state, conversion)

    return LoadedCheckpoint(
        path=path,
        layout=layout,
        state_dict=conversion.state_dict,
        metadata=metadata,
        notes=conversion.notes,
        ignored=conversion.ignored,
        source_keys=conversion.source_keys,
        sha256=file_sha256(path),
    )


def _load_file(path: Path) -> Any:
    if not path.exists():
        raise CheckpointError(f"Checkpoint file not found: {path}. Check the path and that the download finished.")
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder, not a checkpoint file. Pass the .pth or .pt file inside it.")

    with open(path, "rb") as file:
        head = file.read(4)

    if not (head.startswith(_ZIP_MAGIC) or head.startswith(_LEGACY_TORCH_MAGIC)):
        if len(head) >= 2 and head[0] == _PICKLE_PROTO and 2 <= head[1] <= 5:
            raise CheckpointError(
                f"{path} is a plain Python pickle, not a PyTorch checkpoint. It contains pickled Python "
                "objects, which are not loaded, for safety, because unpickling them can run arbitrary code. "
                "An nnU-Net v1 '.model.pkl' or '.model' file is not an encoder checkpoint. Pass an MRI-CORE, "
                "SAM or mricore_nnunet checkpoint (.pth) instead."
            )
        raise CheckpointError(
            f"{path} is not a PyTorch checkpoint: it starts with the bytes {head!r}, not a torch.save "
            "ZIP archive or legacy pickle. Pass the .pth/.pt file written by torch.save. If this is one, "
            "it is corrupt, so download it again."
        )

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        rejected_global = re.search(r"Unsupported global: GLOBAL (\S+)", str(error))
        if rejected_global:
            raise CheckpointError(
                f"{path} contains pickled Python objects (first one: {rejected_global.group(1)}), which are not "
                "loaded, for safety, because unpickling them can run arbitrary code. An nnU-Net v1 '.model' "
                "file is not an encoder checkpoint. If this file comes from a source you trust, load it "
                "yourself with torch.load(..., weights_only=False) and torch.save only its state dict "
                "of tensors."
            ) from error
        raise CheckpointError(
            f"{path} could not be read as a PyTorch checkpoint ({_first_line(error)}). "
            "The file is corrupt or truncated, so download or save it again."
        ) from error
    except (RuntimeError, EOFError, OSError, KeyError, ValueError) as error:
        raise CheckpointError(
            f"{path} could not be read as a PyTorch checkpoint ({type(error).__name__}: {_first_line(error)}). "
            "The file is corrupt or truncated, or a ZIP archive that torch.save did not write. "
            "Download or save it again."
        ) from error


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _reject_nnunet_v1(path: Path, payload: dict[str, Any]) -> None:
    if "plot_stuff" in payload or {"epoch", "state_dict", "optimizer_state_dict"} <= payload.keys():
        raise CheckpointError(
            f"{path} is an nnU-Net v1 training checkpoint (it has 'plot_stuff' or 'epoch', 'state_dict' and "
            "'optimizer_state_dict'), not an encoder checkpoint. Pass an MRI-CORE, SAM or mricore_nnunet "
            "checkpoint, or an nnU-Net v2 checkpoint of an MRI-CORE network."
        )


def _select_weights(payload: dict[str, Any], conversion: Conversion) -> dict[str, Any]:
    """Return the dict of weights inside training-code nesting, noting which nesting was used."""
    state = payload
    while True:
        nested = [key for key in _NESTING_KEYS if isinstance(state.get(key), dict) and state[key]]
        if not nested:
            break
        chosen = nested[0]
        for key in state:
            if key == chosen:
                continue
            if key in nested:
                conversion.ignore(key, f"'{chosen}' weights are used instead")
            else:
                conversion.ignore(key, "training state next to the weights, not weights")
        others = f", and the file also contains {nested[1:]}" if len(nested) > 1 else ""
        conversion.note(f"Used the weights nested under '{chosen}'{others}.")
        state = state[chosen]

    # A DINOv2 SSLMetaArch state dict contains both networks in one dict: 'teacher.*' and 'student.*'.
    for role in ("teacher", "student"):
        prefix = role + "."
        if any(isinstance(key, str) and key.startswith(prefix) for key in state):
            role_state = {
                key[len(prefix):]: value
                for key, value in state.items()
                if isinstance(key, str) and key.startswith(prefix)
            }
            for key in state:
                if not (isinstance(key, str) and key.startswith(prefix)):
                    conversion.ignore(key, f"'{role}' weights are used instead")
            conversion.note(f"Used the '{prefix}*' keys of the combined DINOv2 state dict.")
            return role_state
    return state


def _drop_non_tensors(state: dict[str, Any], conversion: Conversion) -> dict[str, torch.Tensor]:
    tensors = {}
    for key, value in state.items():
        if isinstance(key, str) and isinstance(value, torch.Tensor):
            tensors[key] = value
        else:
            conversion.ignore(str(key), f"not a tensor but a {type(value).__name__}")
    return tensors


def _detect_layout(path: Path, state: dict[str, torch.Tensor]) -> str:
    if any(key.startswith("image_encoder.") for key in state):
        return "sam"
    if any(key.startswith("backbone.") for key in state):
        return "mricore_dinov2"
    if "vit.patch_embed.proj.weight" in state:
        return "mricore_nnunet"
    if "patch_embed.proj.weight" in state:
        pos_embed = state.get("pos_embed")
        # DINOv2 keeps the position embedding as a token list (1 x N x D), timm's SAM ViT as a grid.
        if pos_embed is not None and pos_embed.ndim == 3:
            return "mricore_dinov2"
        return "timm"
    _raise_unknown_layout(path, state)


def _raise_unknown_layout(path: Path, payload: Any) -> None:
    supported = "; ".join(f"{name}: {text}" for name, text in LAYOUT_DESCRIPTIONS.items())
    raise CheckpointError(
        f"{path}: unknown checkpoint layout. Supported layouts are {supported}. "
        f"First keys found: {first_keys(payload)}. Convert the file to one of these layouts, "
        "e.g. by saving the encoder with mricore_nnunet.checkpoints.save_encoder_checkpoint."
    )
