"""Building an `MRICoreEncoder` whose architecture comes from a checkpoint."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from ..encoder import PATCH_SIZE, PRESETS, EncoderPreset, MRICoreEncoder
from .base import CheckpointError, LoadedCheckpoint
from .loading import LoadReport, load_encoder_weights, width_and_depth
from .reading import read_checkpoint

_PRESET_FIELDS = tuple(field.name for field in dataclasses.fields(EncoderPreset))


def build_encoder_from_checkpoint(
    path: str | os.PathLike | LoadedCheckpoint,
    img_size: int | None = None,
    in_chans: int = 1,
    neck_checkpoint: str | os.PathLike | LoadedCheckpoint | None = None,
    preset: str | EncoderPreset | None = None,
) -> tuple[MRICoreEncoder, LoadReport]:
    """Build an encoder with the checkpoint's architecture, load the weights and return both.

    The architecture comes from the metadata of this package's own checkpoints and is inferred
    from the tensor shapes for foreign layouts, unless `preset` is given. `img_size` defaults to
    the metadata's img_size, else to the side the file's position embedding was trained for
    (224 for the MRI-CORE release, 1024 for SAM), else 256. The input normalisation comes from
    the metadata, else MRI-CORE's.
    """
    loaded = path if isinstance(path, LoadedCheckpoint) else read_checkpoint(path)

    notes = []
    if preset is None:
        if loaded.layout == "mricore_nnunet" and loaded.metadata:
            preset, note = preset_from_metadata(loaded)
        else:
            preset, note = infer_preset(loaded)
        notes.append(note)

    if img_size is None:
        img_size = loaded.metadata.get("img_size")
    if img_size is None:
        pos_embed = loaded.state_dict.get("vit.pos_embed")
        img_size = pos_embed.shape[1] * PATCH_SIZE if pos_embed is not None and pos_embed.ndim == 4 else 256
        notes.append(f"img_size {img_size} is the side the checkpoint's position embedding was trained for.")

    normalization = loaded.metadata.get("normalization") if loaded.layout == "mricore_nnunet" else None
    encoder = MRICoreEncoder(preset, img_size=int(img_size), in_chans=in_chans, normalization=normalization)
    report = load_encoder_weights(encoder, loaded, neck_checkpoint=neck_checkpoint)
    report.notes = notes + report.notes
    return encoder, report


def preset_from_metadata(loaded: LoadedCheckpoint) -> tuple[str | EncoderPreset, str]:
    """Return the preset stored in an own checkpoint's metadata and a note on where it came from."""
    metadata = loaded.metadata
    name = metadata.get("preset")
    fields = {field: metadata[field] for field in _PRESET_FIELDS if field in metadata}
    if "global_attn_indexes" in fields:
        fields["global_attn_indexes"] = tuple(fields["global_attn_indexes"])

    if name in PRESETS:
        stored = PRESETS[name]
        if all(getattr(stored, field) == value for field, value in fields.items()):
            return name, f"Preset '{name}' from the checkpoint metadata."

    if set(fields) == set(_PRESET_FIELDS):
        origin = f"preset name {name!r}"
        if name in PRESETS:
            origin += f", whose fields differ from this version's preset '{name}'"
        return EncoderPreset(**fields), f"Custom architecture from the checkpoint metadata ({origin})."

    problem = (
        f"preset {name!r}, whose fields differ from this version's preset of that name,"
        if name in PRESETS
        else f"preset {name!r}, which is not one of {sorted(PRESETS)},"
    )
    missing = sorted(set(_PRESET_FIELDS) - set(fields))
    raise CheckpointError(
        f"{loaded.path}: the metadata names {problem} and lacks the architecture fields {missing}. "
        "Pass preset= to build_encoder_from_checkpoint, or save the encoder again."
    )


def infer_preset(loaded: LoadedCheckpoint) -> tuple[str, str]:
    """Return the named preset whose architecture fits the checkpoint's tensor shapes, and a note.

    Embed dim, depth, presence of relative position, neck width, MLP ratio and (through the
    relative-position tables) head count are compared. Window size and the global blocks cannot
    be read from the shapes alone and are taken from the preset.
    """
    found = _architecture_from_shapes(loaded)
    for name, preset in PRESETS.items():
        if all(getattr(preset, field) == value for field, value in found.items()):
            return name, f"Preset '{name}' inferred from the tensor shapes ({_describe(found)})."

    known = "; ".join(
        f"{name}: embed_dim {p.embed_dim}, depth {p.depth}, use_rel_pos {p.use_rel_pos}, neck_chans {p.neck_chans}"
        for name, p in PRESETS.items()
    )
    raise CheckpointError(
        f"{loaded.path}: no preset fits the checkpoint ({_describe(found)}). Known presets: {known}. "
        "Build an MRICoreEncoder with a matching EncoderPreset and call load_encoder_weights."
    )


def _architecture_from_shapes(loaded: LoadedCheckpoint) -> dict[str, Any]:
    state = loaded.state_dict
    embed_dim, depth = width_and_depth(loaded)
    found: dict[str, Any] = {"embed_dim": embed_dim, "depth": depth}

    rel_pos = [key for key in state if key.endswith(".attn.rel_pos_h")]
    found["use_rel_pos"] = bool(rel_pos)
    if rel_pos:
        head_dim = state[rel_pos[0]].shape[1]
        if head_dim and embed_dim % head_dim == 0:
            found["num_heads"] = embed_dim // head_dim

    neck = state.get("vit.neck.0.weight")
    if neck is not None:
        found["neck_chans"] = int(neck.shape[0])

    fc1 = state.get("vit.blocks.0.mlp.fc1.weight")
    if fc1 is not None:
        found["mlp_ratio"] = fc1.shape[0] / embed_dim
    return found


def _describe(found: dict[str, Any]) -> str:
    return ", ".join(f"{field} {value}" for field, value in found.items())
