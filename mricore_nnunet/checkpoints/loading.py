"""Strict loading of converted checkpoint tensors into an `MRICoreEncoder`, with a load report.

Every tensor of the encoder is either matched (same shape), resized (position embedding,
relative-position tables, patch embedding channels) or reported as freshly initialised, and
every entry of the file that is not used is reported as ignored with its reason.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from collections import defaultdict
from pathlib import Path

import torch
import torch.nn.functional as F
from timm.layers import resample_abs_pos_embed_nhwc
from timm.models import adapt_input_conv

from ..encoder import PRESETS, MRICoreEncoder
from .base import LAYOUT_DESCRIPTIONS, CheckpointError, LoadedCheckpoint
from .reading import read_checkpoint

logger = logging.getLogger(__name__)

_BLOCK_KEY = re.compile(r"^vit\.blocks\.(\d+)\.")
_REL_POS_SUFFIXES = (".attn.rel_pos_h", ".attn.rel_pos_w")
_EXAMPLES = 5


@dataclasses.dataclass
class LoadReport:
    """What `load_encoder_weights` did with each encoder tensor and each entry of the file.

    `matched`, `resized` and `initialised` together name every tensor of the encoder's state
    dict exactly once. `renamed` lists (key in the file, encoder key) for every tensor whose
    name changed, and `ignored` (key in the file, reason) for every entry that was not used.
    """

    path: Path
    layout: str
    sha256: str
    matched: list[str] = dataclasses.field(default_factory=list)
    renamed: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    resized: list[tuple[str, tuple[int, ...], tuple[int, ...], str]] = dataclasses.field(default_factory=list)
    ignored: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    initialised: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)
    warnings: list[str] = dataclasses.field(default_factory=list)
    neck_checkpoint: Path | None = None
    neck_sha256: str | None = None
    from_neck_checkpoint: list[str] = dataclasses.field(default_factory=list)

    def summary(self) -> str:
        """Return a one-line summary of the load."""
        total = len(self.matched) + len(self.resized) + len(self.initialised)
        loaded = len(self.matched) + len(self.resized)
        text = (
            f"Loaded {loaded}/{total} encoder tensors from {self.path.name} ({self.layout}, sha256 "
            f"{self.sha256[:12]}): {len(self.matched)} matched, {len(self.resized)} resized"
        )
        if self.from_neck_checkpoint and self.neck_checkpoint is not None:
            text += f" ({len(self.from_neck_checkpoint)} taken from {self.neck_checkpoint.name})"
        text += f"; {len(self.initialised)} freshly initialised; {len(self.ignored)} file entries ignored"
        if self.warnings:
            text += f"; {len(self.warnings)} warning(s)"
        return text + "."

    def format(self) -> str:
        """Return the report as readable multi-line text."""
        lines = [
            f"Checkpoint: {self.path}",
            f"  layout: {self.layout} ({LAYOUT_DESCRIPTIONS.get(self.layout, '')})",
            f"  sha256: {self.sha256}",
        ]
        if self.neck_checkpoint is not None:
            lines.append(f"  neck checkpoint: {self.neck_checkpoint} (sha256 {self.neck_sha256})")
        lines.append(self.summary())

        if self.notes:
            lines.append("Conversion:")
            lines += [f"  - {note}" for note in self.notes]

        counts = defaultdict(int)
        for key in self.matched:
            counts[part_of(key)] += 1
        matched_parts = ", ".join(f"{part} {count}" for part, count in counts.items())
        lines.append(f"Matched: {len(self.matched)} tensors" + (f" ({matched_parts})" if counts else ""))

        if self.renamed:
            lines.append(f"Renamed: {len(self.renamed)} tensors, for example")
            lines += [f"  {old} -> {new}" for old, new in self.renamed[:_EXAMPLES]]

        if self.resized:
            lines.append("Resized:")
            lines += [
                f"  {key}: {list(old)} -> {list(new)}, {method}" for key, old, new, method in self.resized
            ]

        if self.initialised:
            lines.append("Freshly initialised:")
            lines += _group_by_reason(self.initialised)

        if self.ignored:
            lines.append("Ignored file entries:")
            lines += _group_by_reason(self.ignored)

        if self.warnings:
            lines.append("Warnings:")
            lines += [f"  - {warning}" for warning in self.warnings]
        return "\n".join(lines)


def part_of(key: str) -> str:
    """Return the encoder part an encoder state-dict key belongs to."""
    if key.startswith("vit.patch_embed."):
        return "patch embedding"
    if key == "vit.pos_embed":
        return "position embedding"
    if key.startswith("vit.blocks."):
        return "blocks"
    if key.startswith("vit.neck."):
        return "neck"
    return "other"


def _group_by_reason(entries: list[tuple[str, str]]) -> list[str]:
    groups: dict[str, list[str]] = defaultdict(list)
    for key, reason in entries:
        groups[reason].append(key)
    lines = []
    for reason, keys in groups.items():
        examples = ", ".join(keys[:_EXAMPLES])
        more = f", ... ({len(keys)} in all)" if len(keys) > _EXAMPLES else ""
        lines.append(f"  {reason}: {examples}{more}")
    return lines


def load_encoder_weights(
    encoder: MRICoreEncoder,
    path: str | os.PathLike | LoadedCheckpoint,
    neck_checkpoint: str | os.PathLike | LoadedCheckpoint | None = None,
) -> LoadReport:
    """Load a checkpoint of any supported layout into `encoder` and return the load report.

    `neck_checkpoint` names a second file (normally SAM ViT-B) from which the encoder tensors that
    the first file lacks are taken, such as the neck, which the official MRI-CORE release does
    not contain. Raises CheckpointError when the file does not fit the encoder's architecture or
    lacks tensors of the patch embedding or of the transformer blocks.
    """
    loaded = path if isinstance(path, LoadedCheckpoint) else read_checkpoint(path)
    second = None
    if neck_checkpoint is not None:
        second = neck_checkpoint if isinstance(neck_checkpoint, LoadedCheckpoint) else read_checkpoint(neck_checkpoint)

    report = LoadReport(
        path=loaded.path,
        layout=loaded.layout,
        sha256=loaded.sha256,
        ignored=list(loaded.ignored),
        notes=list(loaded.notes),
    )
    if second is not None:
        report.neck_checkpoint = second.path
        report.neck_sha256 = second.sha256
        report.notes += [f"{second.path.name}: {note}" for note in second.notes]

    check_width_and_depth(loaded, encoder)

    target = encoder.state_dict()
    new_state: dict[str, torch.Tensor] = {}
    missing_required: list[str] = []
    for key, target_tensor in target.items():
        if key in loaded.state_dict:
            source = loaded
        elif second is not None and key in second.state_dict:
            source = second
            report.from_neck_checkpoint.append(key)
        else:
            reason = _initialisation_reason(key, loaded, second)
            if reason is None:
                missing_required.append(key)
            else:
                report.initialised.append((key, reason))
                new_state[key] = target_tensor
            continue

        tensor, method = fit_tensor(key, source, target_tensor, encoder)
        new_state[key] = tensor
        if method is None:
            report.matched.append(key)
        else:
            report.resized.append((key, tuple(source.state_dict[key].shape), tuple(target_tensor.shape), method))
        source_key = source.source_keys.get(key, key)
        if source is second:
            report.renamed.append((f"{second.path.name}:{source_key}", key))
        elif source_key != key:
            report.renamed.append((source_key, key))

    if missing_required:
        examples = ", ".join(missing_required[:_EXAMPLES])
        raise CheckpointError(
            f"{loaded.path}: the checkpoint lacks {len(missing_required)} tensors of the patch embedding or "
            f"the transformer blocks ({examples}). It is incomplete or of another architecture (for example "
            "a DINOv2 SwiGLU MLP). Pass a complete SAM-architecture encoder checkpoint."
        )

    _report_unused(loaded, target, encoder, report)
    _warn_about_initialised(loaded, second, report)

    encoder.load_state_dict(new_state, strict=True)

    logger.info(report.summary())
    for warning in report.warnings:
        logger.warning(warning)
    return report


def _initialisation_reason(key: str, loaded: LoadedCheckpoint, second: LoadedCheckpoint | None) -> str | None:
    """Return why an encoder tensor missing from the file may stay as initialised, or None if it may not."""
    absent = f"not in {loaded.path.name}" + (f" nor in {second.path.name}" if second is not None else "")
    if key.startswith("vit.neck."):
        return f"{absent}, so the neck keeps its random initialisation"
    if key == "vit.pos_embed":
        return f"{absent}, so the position embedding keeps its random initialisation"
    if key.endswith(_REL_POS_SUFFIXES):
        return f"{absent}, so the relative-position table keeps its zero initialisation (no relative position bias)"
    return None


def _report_unused(
    loaded: LoadedCheckpoint, target: dict[str, torch.Tensor], encoder: MRICoreEncoder, report: LoadReport
) -> None:
    """Report the converted tensors of the file that the encoder has no place for."""
    left_out_rel_pos = 0
    unexpected = []
    for key in loaded.state_dict:
        if key in target:
            continue
        source_key = loaded.source_keys.get(key, key)
        if key.endswith(_REL_POS_SUFFIXES) and not encoder.preset.use_rel_pos:
            report.ignored.append(
                (source_key, f"relative-position table left out because preset '{encoder.preset_name}' has none")
            )
            left_out_rel_pos += 1
        else:
            report.ignored.append((source_key, "no counterpart in the encoder"))
            unexpected.append(source_key)

    if left_out_rel_pos:
        report.warnings.append(
            f"{left_out_rel_pos} relative-position tables of {loaded.path.name} were left out because preset "
            f"'{encoder.preset_name}' has no relative position, so attention differs from the model that was "
            "trained with them. Use a preset with use_rel_pos (such as sam_vit_b) to keep them."
        )
    if unexpected:
        examples = ", ".join(unexpected[:_EXAMPLES])
        report.warnings.append(
            f"{len(unexpected)} tensors of {loaded.path.name} have no counterpart in the encoder and were "
            f"ignored ({examples}). Check that the file is a SAM-architecture encoder."
        )


def _warn_about_initialised(loaded: LoadedCheckpoint, second: LoadedCheckpoint | None, report: LoadReport) -> None:
    neck = [key for key, _ in report.initialised if key.startswith("vit.neck.")]
    if neck:
        advice = (
            "Pass neck_checkpoint= a SAM ViT-B checkpoint to take SAM's neck, as the official MRI-CORE "
            "code does when it starts from SAM weights."
            if second is None
            else f"{second.path.name} has no neck either."
        )
        report.warnings.append(
            f"The neck ({len(neck)} tensors) is freshly initialised because {loaded.path.name} has no neck, "
            f"so the encoder's output features are random projections until fine-tuned. {advice}"
        )
    others = [key for key, _ in report.initialised if not key.startswith("vit.neck.")]
    if others:
        report.warnings.append(
            f"{len(others)} further encoder tensors are freshly initialised ({', '.join(others[:_EXAMPLES])})."
        )
    if second is not None and not report.from_neck_checkpoint:
        report.warnings.append(
            f"Neck checkpoint {second.path.name} was not used because it contains none of the encoder "
            f"tensors that {loaded.path.name} lacks."
        )


def check_width_and_depth(loaded: LoadedCheckpoint, encoder: MRICoreEncoder) -> None:
    """Raise CheckpointError when the file's embed dim or number of blocks differs from the encoder's."""
    embed_dim, depth = width_and_depth(loaded)
    if embed_dim == encoder.embed_dim and depth == encoder.depth:
        return

    fitting = [name for name, preset in PRESETS.items() if preset.embed_dim == embed_dim and preset.depth == depth]
    advice = (
        f"Use the preset {' or '.join(repr(name) for name in fitting)}, or build_encoder_from_checkpoint, which infers it."
        if fitting
        else f"No named preset fits, so pass an EncoderPreset with embed_dim={embed_dim} and depth={depth}."
    )
    raise CheckpointError(
        f"{loaded.path}: the checkpoint's encoder has embed dim {embed_dim} and depth {depth}, but preset "
        f"'{encoder.preset_name}' expects embed dim {encoder.embed_dim} and depth {encoder.depth}. {advice}"
    )


def width_and_depth(loaded: LoadedCheckpoint) -> tuple[int, int]:
    """Return the embed dim and number of transformer blocks of a converted checkpoint."""
    state = loaded.state_dict
    blocks = {int(match.group(1)) for key in state if (match := _BLOCK_KEY.match(key))}
    if not blocks:
        raise CheckpointError(
            f"{loaded.path}: the {loaded.layout} checkpoint contains no transformer blocks "
            f"('vit.blocks.<i>.*' after conversion). It is not a complete encoder checkpoint."
        )
    if "vit.patch_embed.proj.weight" in state:
        embed_dim = state["vit.patch_embed.proj.weight"].shape[0]
    else:
        first = min(blocks)
        norm = state.get(f"vit.blocks.{first}.norm1.weight")
        if norm is None:
            raise CheckpointError(
                f"{loaded.path}: neither 'patch_embed.proj.weight' nor 'blocks.{first}.norm1.weight' found, so "
                "the embed dim is unknown. The file is not a complete encoder checkpoint."
            )
        embed_dim = norm.shape[0]
    return int(embed_dim), max(blocks) + 1


def fit_tensor(
    key: str, source: LoadedCheckpoint, target: torch.Tensor, encoder: MRICoreEncoder
) -> tuple[torch.Tensor, str | None]:
    """Return the file's tensor for `key` in the encoder's shape, and how it was resized (None if not)."""
    tensor = source.state_dict[key]
    if tuple(tensor.shape) == tuple(target.shape):
        return tensor, None

    source_key = source.source_keys.get(key, key)
    if key == "vit.pos_embed" and tensor.ndim == 4 and tensor.shape[-1] == target.shape[-1]:
        new_size = [target.shape[1], target.shape[2]]
        resized = resample_abs_pos_embed_nhwc(tensor.float(), new_size)  # 1 x H x W x D
        method = (
            f"bicubic interpolation of the {tensor.shape[1]}x{tensor.shape[2]} grid to "
            f"{new_size[0]}x{new_size[1]} (timm resample_abs_pos_embed_nhwc)"
        )
        return resized.to(tensor.dtype), method

    if key.endswith(_REL_POS_SUFFIXES) and tensor.ndim == 2 and tensor.shape[1] == target.shape[1]:
        # L x head_dim -> 1 x head_dim x L, interpolated along L as timm does at run time.
        table = tensor.float().t().unsqueeze(0)
        table = F.interpolate(table, size=target.shape[0], mode="linear")
        resized = table[0].t().contiguous()  # L' x head_dim
        method = f"linear interpolation along the relative offsets from {tensor.shape[0]} to {target.shape[0]} entries"
        return resized.to(tensor.dtype), method

    if (
        key == "vit.patch_embed.proj.weight"
        and tensor.ndim == 4
        and tensor.shape[0] == target.shape[0]
        and tensor.shape[2:] == target.shape[2:]
    ):
        return adapt_patch_embedding(tensor, target.shape[1])

    neck_hint = ""
    if key.startswith("vit.neck."):
        neck_hint = f" The file's neck has {tensor.shape[0]} output channels, the preset's {encoder.out_chans}."
    raise CheckpointError(
        f"{source.path}: '{source_key}' has shape {list(tensor.shape)}, but the encoder's '{key}' has shape "
        f"{list(target.shape)}, so the checkpoint's architecture differs from preset '{encoder.preset_name}' "
        f"(for example in MLP ratio, number of heads, window size or neck width).{neck_hint} Use "
        "build_encoder_from_checkpoint, which infers the preset, or pass a matching EncoderPreset."
    )


def adapt_patch_embedding(weight: torch.Tensor, in_chans: int) -> tuple[torch.Tensor, str]:
    """Adapt a D x C x 16 x 16 patch-embedding kernel to `in_chans` input channels.

    Returns the adapted kernel and a description of the adaptation for the load report.
    """
    source_chans = weight.shape[1]
    if source_chans == 3:
        adapted = adapt_input_conv(in_chans, weight)  # D x in_chans x 16 x 16
        if in_chans == 1:
            method = "adapted from 3 to 1 input channel by summing the RGB kernels (timm adapt_input_conv)"
        else:
            method = (
                f"adapted from 3 to {in_chans} input channels by repeating the RGB kernels and scaling them "
                f"by 3/{in_chans} (timm adapt_input_conv)"
            )
        return adapted, method

    # Any other source: a grey image replicated to all channels keeps the same response.
    grey = weight.float().sum(dim=1, keepdim=True)  # D x 1 x 16 x 16
    adapted = (grey / in_chans).repeat(1, in_chans, 1, 1).to(weight.dtype)  # D x in_chans x 16 x 16
    method = (
        f"adapted from {source_chans} to {in_chans} input channels by summing the kernels over the input "
        f"channels and spreading the sum evenly over {in_chans} channels"
    )
    return adapted, method
