"""Distances between two image sets in the encoder's embedding space.

Each set is the slice embeddings (spatial means of the neck output) of its volumes. Three distances
are offered: the Fréchet distance between Gaussians fitted to the two sets (as in FID), the squared
maximum mean discrepancy (MMD) with an RBF kernel, and the cosine distance of the set centroids.
A set is a folder of NIfTI files or a pre-training manifest JSON whose `files` list names them.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import scipy.linalg
import torch
from scipy.spatial.distance import cdist

from ..embed import NIFTI_SUFFIXES
from .io import cached_slice_embeddings, write_json_atomically

logger = logging.getLogger(__name__)

METRICS = ("frechet", "mmd", "cosine")
# Added to both covariance diagonals before the matrix square root: with fewer slices than embedding
# channels the covariances are singular and sqrtm becomes inaccurate.
COVARIANCE_OFFSET = 1e-6
MMD_MAX_SAMPLES = 2000


@dataclass(frozen=True)
class SimilarityResult:
    """The distances between two sets and the report file."""

    report: dict
    report_json: Path


def frechet_distance(a: np.ndarray, b: np.ndarray, offset: float = COVARIANCE_OFFSET) -> float:
    """Return the Fréchet distance between Gaussians fitted to the rows of `a` (N x D) and `b` (M x D).

    d = |mu_a - mu_b|^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)), with sample covariances (N - 1 in the
    denominator) plus `offset` on the diagonal. sqrtm can return a tiny imaginary part from rounding,
    which is dropped.
    """
    a, b = _check_sets(a, b, minimum=2)
    mean_a, mean_b = a.mean(axis=0), b.mean(axis=0)
    identity = np.eye(a.shape[1])
    covariance_a = np.atleast_2d(np.cov(a, rowvar=False)) + offset * identity  # D x D
    covariance_b = np.atleast_2d(np.cov(b, rowvar=False)) + offset * identity  # D x D
    root = scipy.linalg.sqrtm(covariance_a @ covariance_b)
    if np.iscomplexobj(root):
        imaginary = np.abs(root.imag).max()
        if imaginary > 1e-3 * max(np.abs(root.real).max(), 1e-12):
            logger.warning("Matrix square root has an imaginary part of %.3g; the Fréchet distance may be inaccurate.", imaginary)
        root = root.real
    difference = mean_a - mean_b
    return float(difference @ difference + np.trace(covariance_a) + np.trace(covariance_b) - 2.0 * np.trace(root))


def mmd_rbf(a: np.ndarray, b: np.ndarray, bandwidth: float | None = None, max_samples: int = MMD_MAX_SAMPLES, seed: int = 0) -> tuple[float, float]:
    """Return the squared MMD of `a` and `b` with an RBF kernel, and the kernel bandwidth used.

    k(x, y) = exp(-|x - y|^2 / (2 sigma^2)). Without `bandwidth`, sigma is the median of the pairwise
    Euclidean distances of the pooled sets (median heuristic). The estimate is the biased one
    (V-statistic), which is 0 for identical sets and never negative. Sets larger than `max_samples`
    rows are subsampled at random to that size.
    """
    a, b = _check_sets(a, b, minimum=1)
    generator = np.random.default_rng(seed)
    if len(a) > max_samples:
        a = a[generator.choice(len(a), max_samples, replace=False)]
    if len(b) > max_samples:
        b = b[generator.choice(len(b), max_samples, replace=False)]

    if bandwidth is None:
        pooled = np.concatenate([a, b])
        distances = cdist(pooled, pooled)
        off_diagonal = distances[~np.eye(len(pooled), dtype=bool)]
        bandwidth = float(np.median(off_diagonal)) if off_diagonal.size else 0.0
        if bandwidth <= 0:
            # All points coincide, so any bandwidth gives the same (zero) MMD.
            bandwidth = 1.0
    scale = 2.0 * bandwidth**2
    within_a = np.exp(-cdist(a, a, "sqeuclidean") / scale).mean()
    within_b = np.exp(-cdist(b, b, "sqeuclidean") / scale).mean()
    across = np.exp(-cdist(a, b, "sqeuclidean") / scale).mean()
    return float(max(within_a + within_b - 2.0 * across, 0.0)), float(bandwidth)


def centroid_cosine_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Return 1 - cosine similarity of the mean rows of `a` and `b`."""
    a, b = _check_sets(a, b, minimum=1)
    mean_a, mean_b = a.mean(axis=0), b.mean(axis=0)
    norms = np.linalg.norm(mean_a) * np.linalg.norm(mean_b)
    if norms == 0:
        raise ValueError("A set's mean embedding is the zero vector, so its cosine distance is undefined.")
    return float(1.0 - mean_a @ mean_b / norms)


def _check_sets(a: np.ndarray, b: np.ndarray, minimum: int) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"Expected two N x D embedding matrices with equal D, got shapes {a.shape} and {b.shape}.")
    for name, rows in (("A", a), ("B", b)):
        if len(rows) < minimum:
            raise ValueError(f"Set {name} has {len(rows)} embeddings, but this distance needs at least {minimum}. Add images to it.")
    return a, b


def read_image_set(source: str | os.PathLike) -> list[Path]:
    """Return the NIfTI files of a set: a folder's files, or the `files` of a manifest JSON.

    Manifest entries are paths or objects with a `path` key (as in pre-training's data_manifest.json);
    relative paths are relative to the manifest's folder. Files that do not exist are all listed in
    one error.
    """
    source = Path(source)
    if source.is_dir():
        files = sorted(path for path in source.iterdir()
                       if path.is_file() and not path.name.startswith(".") and path.name.endswith(NIFTI_SUFFIXES))
        if not files:
            raise ValueError(f"No .nii.gz or .nii files in folder {source}. Pass a folder of NIfTI volumes or a manifest JSON.")
        return files
    if not source.is_file():
        raise FileNotFoundError(f"Image set not found: {source}. Pass a folder of NIfTI volumes or a manifest JSON.")
    if not source.name.endswith(".json"):
        raise ValueError(f"{source} is neither a folder nor a manifest .json file. Pass a folder of NIfTI volumes or a manifest JSON.")

    try:
        entries = json.loads(source.read_text(encoding="utf-8"))["files"]
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"Cannot read a 'files' list from manifest {source}: {error!r}. Expected JSON like {{\"files\": [\"a.nii.gz\", ...]}}.") from None
    files, missing = [], []
    for entry in entries:
        text = entry.get("path") if isinstance(entry, dict) else entry
        if not isinstance(text, str):
            raise ValueError(f"Manifest {source} has the entry {entry!r} in 'files'; expected a path or an object with a 'path' key.")
        path = Path(text)
        if not path.is_absolute():
            path = source.parent / path
        (files if path.is_file() else missing).append(path)
    if missing:
        listed = "\n".join(f"  - {path}" for path in missing)
        raise FileNotFoundError(f"{len(missing)} of {len(entries)} files of manifest {source} were not found:\n{listed}")
    if not files:
        raise ValueError(f"Manifest {source} lists no files. Add NIfTI paths to its 'files' list.")
    unique = list(dict.fromkeys(path.resolve() for path in files))
    if len(unique) < len(files):
        logger.info("Manifest %s names %d files more than once; each is used once.", source, len(files) - len(unique))
    return unique


def compare_image_sets(
    set_a: str | os.PathLike,
    set_b: str | os.PathLike,
    out_dir: str | os.PathLike,
    metrics: Sequence[str] = ("frechet",),
    checkpoint: str | os.PathLike | None = None,
    preset: str = "tiny",
    img_size: int | None = None,
    device: str | torch.device = "cpu",
    batch_size: int = 16,
    max_volumes: int | None = None,
    seed: int = 0,
) -> SimilarityResult:
    """Compute the requested distances between the slice embeddings of two image sets.

    Embeddings are cached in `out_dir/embeddings/a` and `.../b`. With `max_volumes`, a larger set is
    replaced by a random subset of that many volumes (from `seed`). Writes `similarity_report.json`.
    """
    unknown = [metric for metric in metrics if metric not in METRICS]
    if unknown or not metrics:
        raise ValueError(f"Unknown metrics {unknown}; choose from {METRICS}.")
    if max_volumes is not None and max_volumes < 1:
        raise ValueError(f"--max-volumes must be at least 1, got {max_volumes}.")
    out_dir = Path(out_dir)

    sets = {}
    for name, source in (("a", set_a), ("b", set_b)):
        files = read_image_set(source)
        if max_volumes is not None and len(files) > max_volumes:
            chosen = np.random.default_rng(seed).choice(len(files), max_volumes, replace=False)
            files = [files[index] for index in sorted(chosen)]
            logger.info("Set %s: using a random subset of %d volumes.", name.upper(), max_volumes)
        embeddings, used_size = cached_slice_embeddings(
            files, out_dir / "embeddings" / name, checkpoint, preset, img_size, device, batch_size, seed
        )
        sets[name] = {"source": str(Path(source).resolve()), "volumes": len(files), "embeddings": np.concatenate(embeddings)}  # slices x C

    a, b = sets["a"]["embeddings"], sets["b"]["embeddings"]
    distances: dict[str, float] = {}
    details: dict[str, float] = {}
    for metric in metrics:
        if metric == "frechet":
            distances["frechet"] = frechet_distance(a, b)
        elif metric == "mmd":
            distances["mmd"], details["mmd_bandwidth"] = mmd_rbf(a, b, seed=seed)
        else:
            distances["cosine"] = centroid_cosine_distance(a, b)

    report = {
        "a": {"source": sets["a"]["source"], "volumes": sets["a"]["volumes"], "slices": int(len(a))},
        "b": {"source": sets["b"]["source"], "volumes": sets["b"]["volumes"], "slices": int(len(b))},
        "checkpoint": None if checkpoint is None else str(Path(checkpoint).resolve()),
        "preset": None if checkpoint is not None else preset,
        "img_size": used_size,
        "embedding_dim": int(a.shape[1]),
        "seed": seed,
        "distances": distances,
        **details,
        "definitions": {
            "frechet": f"|mu_a - mu_b|^2 + Tr(S_a + S_b - 2 sqrtm(S_a S_b)), covariances + {COVARIANCE_OFFSET:g} I",
            "mmd": f"biased squared MMD, RBF kernel, median-heuristic bandwidth, at most {MMD_MAX_SAMPLES} slices per set",
            "cosine": "1 - cosine similarity of the two mean slice embeddings",
        },
    }
    return SimilarityResult(report, write_json_atomically(out_dir / "similarity_report.json", report))


def format_similarity_table(report: dict) -> str:
    """Format the sets and distances of a report as a plain-text table."""
    lines = [
        f"{'set':<4} {'volumes':>8} {'slices':>8}  source",
        f"{'A':<4} {report['a']['volumes']:>8} {report['a']['slices']:>8}  {report['a']['source']}",
        f"{'B':<4} {report['b']['volumes']:>8} {report['b']['slices']:>8}  {report['b']['source']}",
        "",
        f"{'metric':<10} {'distance':>12}",
    ]
    for metric, value in report["distances"].items():
        lines.append(f"{metric:<10} {value:>12.6g}")
    if "mmd_bandwidth" in report:
        lines.append(f"(MMD bandwidth sigma = {report['mmd_bandwidth']:.6g})")
    return "\n".join(lines)
