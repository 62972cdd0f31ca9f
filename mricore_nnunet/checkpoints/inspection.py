"""Text description of a checkpoint file, for the command line's `inspect-checkpoint`."""

from __future__ import annotations

import json
import os
from collections import defaultdict

from .base import LAYOUT_DESCRIPTIONS, CheckpointError
from .building import build_encoder_from_checkpoint
from .loading import part_of
from .reading import read_checkpoint


def inspect_checkpoint(path: str | os.PathLike) -> str:
    """Describe a checkpoint: layout, metadata, parameter counts per part, and a load report.

    The load report is made against the preset that fits the file (from the metadata, or inferred
    from the tensor shapes) at the img_size the file was trained for. Raises CheckpointError when
    the file cannot be read. A file that fits no preset is described without a load report.
    """
    loaded = read_checkpoint(path)
    size_mib = loaded.path.stat().st_size / 2**20

    lines = [
        f"File: {loaded.path} ({size_mib:.1f} MiB)",
        f"SHA-256: {loaded.sha256}",
        f"Layout: {loaded.layout} ({LAYOUT_DESCRIPTIONS[loaded.layout]})",
    ]

    if loaded.metadata:
        lines.append("Metadata:")
        lines += [f"  {key}: {json.dumps(value, default=str)}" for key, value in loaded.metadata.items()]
    else:
        lines.append("Metadata: none in this layout")

    counts: dict[str, int] = defaultdict(int)
    for key, tensor in loaded.state_dict.items():
        counts[part_of(key)] += tensor.numel()
    lines.append("Parameters in the file (encoder tensors only):")
    for part in ("patch embedding", "position embedding", "blocks", "neck", "other"):
        if part in counts:
            lines.append(f"  {part}: {counts[part]:,}")
    lines.append(f"  total: {sum(counts.values()):,}")
    lines.append(f"Ignored file entries: {len(loaded.ignored)}")

    try:
        encoder, report = build_encoder_from_checkpoint(loaded)
    except CheckpointError as error:
        lines.append(f"No load report: {error}")
    else:
        lines.append(f"Load report against preset '{encoder.preset_name}' at img_size {encoder.img_size}:")
        lines.append(report.format())
    return "\n".join(lines)
