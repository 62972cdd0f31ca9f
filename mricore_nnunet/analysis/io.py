"""Cached slice embeddings for the analyses, and atomic writers for their reports and images."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import SimpleITK as sitk
import torch

from ..atomic import atomic_path, atomic_write_text
from ..checkpoints import file_sha256
from ..embed import DEFAULT_IMG_SIZE, build_encoder, case_name, embed_images
from ..encoder import MRICoreEncoder

logger = logging.getLogger(__name__)


def seeded_encoder(
    checkpoint: str | os.PathLike | None, preset: str, img_size: int | None, device: str | torch.device, seed: int
) -> tuple[MRICoreEncoder, str]:
    """Build the encoder in eval mode on `device`; without a checkpoint its random weights come from `seed`.

    Returns the encoder and the checkpoint's sha256 (empty without a checkpoint).
    """
    # A fixed seed makes a random encoder the same in every run, so cached results stay comparable.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        encoder, sha256 = build_encoder(checkpoint, preset, img_size)
    return encoder.to(device).eval(), sha256


def cached_slice_embeddings(
    files: Sequence[Path],
    cache_dir: Path,
    checkpoint: str | os.PathLike | None,
    preset: str,
    img_size: int | None,
    device: str | torch.device,
    batch_size: int,
    seed: int = 0,
) -> tuple[list[np.ndarray], int]:
    """Return the Z x C slice embeddings of each file and the encoder input size, through `embed_images`' cache.

    A cached file written by another checkpoint, preset or input size is computed again. Without a
    checkpoint the random encoder's weights come from `seed`, so repeated runs give equal embeddings.
    """
    unique: dict[str, Path] = {}  # case name -> file
    for file in files:
        case = case_name(Path(file))
        if case in unique and unique[case].resolve() != Path(file).resolve():
            raise ValueError(
                f"{unique[case]} and {file} have the same case name {case!r}, and the embedding cache names files by "
                "case. Rename one of them or link it under another name."
            )
        unique.setdefault(case, Path(file))

    cache_dir.mkdir(parents=True, exist_ok=True)
    expected_sha = file_sha256(checkpoint) if checkpoint is not None else ""
    expected_size = img_size if img_size is not None or checkpoint is not None else DEFAULT_IMG_SIZE
    for case in unique:
        cached = cache_dir / f"{case}.npz"
        if cached.exists() and not _cache_matches(cached, expected_sha, preset, expected_size, checkpoint is None):
            logger.info("Recomputing %s: it was written by another encoder or input size.", cached)
            cached.unlink()

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        embed_images(
            list(unique.values()), cache_dir, checkpoint=checkpoint, preset=preset, img_size=img_size, device=device,
            batch_size=batch_size,
        )

    embeddings = []
    for file in files:
        with np.load(cache_dir / f"{case_name(Path(file))}.npz") as data:
            embeddings.append(data["slice_embeddings"])  # Z x C
            used_size = int(data["img_size"])
    return embeddings, used_size


def _cache_matches(path: Path, sha256: str, preset: str, img_size: int | None, random_encoder: bool) -> bool:
    try:
        with np.load(path) as data:
            if str(data["checkpoint_sha256"]) != sha256:
                return False
            if random_encoder and str(data["preset"]) != preset:
                return False
            return img_size is None or int(data["img_size"]) == img_size
    except (OSError, ValueError, KeyError):
        return False


write_text_atomically = atomic_write_text


def write_json_atomically(path: str | os.PathLike, data: dict) -> Path:
    return write_text_atomically(path, json.dumps(data, indent=2) + "\n")


def save_figure_atomically(figure, path: str | os.PathLike, dpi: int = 100) -> Path:
    """Save a matplotlib figure; the format comes from the suffix of `path`."""
    with atomic_path(path) as temp:
        figure.savefig(temp, dpi=dpi, bbox_inches="tight")
    return Path(path)


def write_image_atomically(image: sitk.Image, path: str | os.PathLike) -> Path:
    with atomic_path(path) as temp:
        sitk.WriteImage(image, str(temp), useCompression=True)
    return Path(path)
