"""Prompt-free and one-click segmentation from frozen patch features, without any training.

Evaluation mode clusters the patch features of each slice (or of each whole volume) with k-means
and assigns each cluster to the label it overlaps most on the image grid. The 2D Dice of the
resulting label maps against the reference, for several cluster counts, measures how well the
features separate anatomy on their own.

One-click mode takes the features under a clicked point or box as a prototype and marks every
voxel of the volume whose cosine similarity to the prototype exceeds a threshold.

Patch features are the encoder's neck output, L2-normalised per patch, so that k-means and the
prototype compare feature directions (cosine geometry), the usual practice for ViT patch features.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import SimpleITK as sitk
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..embed import case_name, encode_slices, read_volume
from ..encoder import PATCH_SIZE, MRICoreEncoder
from ..validation import Problem, ValidationError
from .io import save_figure_atomically, seeded_encoder, write_image_atomically, write_json_atomically

logger = logging.getLogger(__name__)

DEFAULT_CLUSTERS = (2, 4, 8, 16, 32)
MODES = ("slice", "volume")
NIFTI_SUFFIXES = (".nii.gz", ".nii")
# Slices per step when cluster maps are upsampled to the image grid. The one-hot maps of a step take
# slices x clusters x Y x X floats, so this bounds their memory.
UPSAMPLE_CHUNK = 4


@dataclass(frozen=True)
class ZeroShotResult:
    """Dice per cluster count and the files the evaluation wrote."""

    report: dict
    report_json: Path
    plot_png: Path


@dataclass(frozen=True)
class PromptResult:
    """Outcome of one-click segmentation."""

    output: Path
    threshold: float
    marked_voxels: int
    total_voxels: int
    similarity_map: Path | None


@torch.no_grad()
def patch_features(encoder: MRICoreEncoder, array: np.ndarray, batch_size: int) -> torch.Tensor:
    """Return the L2-normalised patch features of a Z x Y x X array: Z x C x h x w on the encoder's device."""
    batches = [F.normalize(features.float(), dim=1) for features in encode_slices(encoder, array, batch_size)]
    return torch.cat(batches)  # Z x C x h x w


def kmeans(points: torch.Tensor, num_clusters: int, iterations: int = 50, seed: int = 0) -> torch.Tensor:
    """Cluster each of B point sets independently; return the B x N cluster index of every point.

    `points` is B x N x C. Centroids start from k-means++ seeding and move by Lloyd iterations until
    they stop changing or `iterations` is reached. An empty cluster keeps its centroid.
    """
    batch, count, _ = points.shape
    if not 1 <= num_clusters <= count:
        raise ValueError(f"Cannot form {num_clusters} clusters from {count} points; use between 1 and {count} clusters.")
    generator = torch.Generator(device=points.device)
    generator.manual_seed(seed)
    rows = torch.arange(batch, device=points.device)

    first = torch.randint(count, (batch,), generator=generator, device=points.device)
    centroids = [points[rows, first]]  # B x C each
    nearest = ((points - centroids[0][:, None]) ** 2).sum(-1)  # B x N squared distance to the nearest centroid
    for _ in range(1, num_clusters):
        # Where every point coincides with a centroid (a blank slice), all weights are 0 and any point will do.
        weights = torch.where(nearest.sum(1, keepdim=True) > 0, nearest, torch.ones_like(nearest))
        chosen = torch.multinomial(weights, 1, generator=generator).squeeze(1)
        centroids.append(points[rows, chosen])
        nearest = torch.minimum(nearest, ((points - centroids[-1][:, None]) ** 2).sum(-1))
    centroids = torch.stack(centroids, dim=1)  # B x K x C

    for _ in range(iterations):
        assignments = torch.cdist(points, centroids).argmin(-1)  # B x N
        one_hot = F.one_hot(assignments, num_clusters).to(points.dtype)  # B x N x K
        counts = one_hot.sum(1)  # B x K
        means = one_hot.transpose(1, 2) @ points / counts.clamp_min(1)[..., None]  # B x K x C
        updated = torch.where(counts[..., None] > 0, means, centroids)
        converged = torch.allclose(updated, centroids)
        centroids = updated
        if converged:
            break
    return torch.cdist(points, centroids).argmin(-1)  # B x N


def upsample_cluster_maps(assignments: torch.Tensor, num_clusters: int, shape: tuple[int, int]) -> np.ndarray:
    """Bring Z x h x w cluster maps to the Z x Y x X image grid.

    Each cluster's indicator map is upsampled bilinearly and every pixel takes the cluster with the
    largest value, which gives smoother borders than nearest-neighbour upsampling of the indices.
    """
    maps = []
    for start in range(0, assignments.shape[0], UPSAMPLE_CHUNK):
        chunk = F.one_hot(assignments[start : start + UPSAMPLE_CHUNK], num_clusters)  # B x h x w x K
        chunk = chunk.permute(0, 3, 1, 2).float()  # B x K x h x w
        chunk = F.interpolate(chunk, size=shape, mode="bilinear", align_corners=False)  # B x K x Y x X
        maps.append(chunk.argmax(1).cpu())  # B x Y x X
    return torch.cat(maps).numpy()  # Z x Y x X


def cluster_label_overlap(cluster_map: np.ndarray, label_map: np.ndarray, num_clusters: int, labels: Sequence[int]) -> np.ndarray:
    """Return the K x L count of pixels of each cluster (rows) on each label (columns, in `labels` order)."""
    label_index = np.full(label_map.shape, -1)
    for index, value in enumerate(labels):
        label_index[label_map == value] = index
    if (label_index < 0).any():
        unknown = sorted(np.unique(label_map[label_index < 0]).tolist())
        raise ValueError(f"Label map contains values {unknown} outside the expected labels {list(labels)}.")
    flat = cluster_map.astype(np.int64).ravel() * len(labels) + label_index.ravel()
    return np.bincount(flat, minlength=num_clusters * len(labels)).reshape(num_clusters, len(labels))


def match_clusters_to_labels(overlap: np.ndarray, labels: Sequence[int]) -> np.ndarray:
    """Assign each cluster the label it overlaps most; return the label value of each cluster.

    `overlap` is K x L as from `cluster_label_overlap`. A tie goes to the label listed first in
    `labels` (background, when it comes first), and so does a cluster without pixels.
    """
    return np.asarray(labels)[overlap.argmax(axis=1)]


def dice_per_slice(prediction: np.ndarray, reference: np.ndarray, label: int) -> list[float]:
    """Return the 2D Dice of `label` on each slice of Z x Y x X maps where the reference contains it."""
    scores = []
    for predicted_slice, reference_slice in zip(prediction, reference):
        truth = reference_slice == label
        if not truth.any():
            continue
        predicted = predicted_slice == label
        scores.append(2.0 * np.logical_and(predicted, truth).sum() / (predicted.sum() + truth.sum()))
    return scores


def cluster_segmentation(
    features: torch.Tensor, reference: np.ndarray, num_clusters: int, labels: Sequence[int], mode: str, seed: int = 0
) -> np.ndarray:
    """Segment a volume by clustering and label matching; return the Z x Y x X label map.

    `features` is Z x C x h x w (normalised patch features), `reference` the Z x Y x X label map used
    for matching. In "slice" mode each slice gets its own clusters and matching, in "volume" mode the
    whole volume shares them.
    """
    depth, channels, height, width = features.shape
    points = features.permute(0, 2, 3, 1).reshape(depth, height * width, channels)  # Z x hw x C
    if mode == "volume":
        points = points.reshape(1, depth * height * width, channels)  # 1 x Zhw x C
    elif mode != "slice":
        raise ValueError(f"Unknown clustering mode {mode!r}; choose one of {MODES}.")

    assignments = kmeans(points, num_clusters, seed=seed).reshape(depth, height, width)  # Z x h x w
    cluster_map = upsample_cluster_maps(assignments, num_clusters, reference.shape[1:])  # Z x Y x X

    segmentation = np.zeros_like(reference)
    groups = [slice(None)] if mode == "volume" else [slice(index, index + 1) for index in range(depth)]
    for group in groups:
        overlap = cluster_label_overlap(cluster_map[group], reference[group], num_clusters, labels)
        segmentation[group] = match_clusters_to_labels(overlap, labels)[cluster_map[group]]
    return segmentation


def evaluate_zeroshot(
    images: str | os.PathLike,
    labels: str | os.PathLike,
    out_dir: str | os.PathLike,
    clusters: Sequence[int] = DEFAULT_CLUSTERS,
    checkpoint: str | os.PathLike | None = None,
    preset: str = "tiny",
    img_size: int | None = None,
    mode: str = "slice",
    device: str | torch.device = "cpu",
    batch_size: int = 16,
    max_cases: int | None = None,
    seed: int = 0,
) -> ZeroShotResult:
    """Score k-means segmentation of patch features against reference labels for each cluster count.

    Images are paired with labels by case name (`<case>_0000.nii.gz` with `<case>.nii.gz`). Dice is
    2D: per slice and label, over slices whose reference contains the label, then averaged over all
    such slices of all cases. Writes `zeroshot_report.json` and `zeroshot_dice.png` to `out_dir`.
    """
    if mode not in MODES:
        raise ValueError(f"Unknown clustering mode {mode!r}; choose one of {MODES}.")
    clusters = sorted(set(int(count) for count in clusters))
    if not clusters or clusters[0] < 1:
        raise ValueError(f"Cluster counts must be positive integers, got {clusters}.")
    pairs = pair_images_with_labels(Path(images), Path(labels))
    if max_cases is not None:
        pairs = pairs[:max_cases]

    encoder, sha256 = seeded_encoder(checkpoint, preset, img_size, device, seed)
    patches_per_slice = (encoder.img_size // PATCH_SIZE) ** 2
    if mode == "slice" and clusters[-1] > patches_per_slice:
        raise ValueError(
            f"{clusters[-1]} clusters exceed the {patches_per_slice} patches of a slice at input size {encoder.img_size}. "
            f"Use at most {patches_per_slice} clusters or a larger --input-size."
        )

    label_values = _label_values(label for _, label in pairs)
    foreground = [value for value in label_values if value != 0]
    names = _label_names(Path(labels), foreground)
    scores = {count: {value: [] for value in foreground} for count in clusters}
    per_case: dict[str, dict[str, float | None]] = {}

    for image_path, label_path in tqdm(pairs, desc="Zero-shot clustering", unit="volume"):
        _, array = read_volume(image_path)
        reference = sitk.GetArrayFromImage(sitk.ReadImage(str(label_path))).astype(np.int64)
        if reference.ndim == 2:
            reference = reference[None]
        features = patch_features(encoder, array, batch_size)  # Z x C x h x w
        case = case_name(image_path)
        per_case[case] = {}
        for count in clusters:
            segmentation = cluster_segmentation(features, reference, count, label_values, mode, seed)
            case_scores = []
            for value in foreground:
                slice_scores = dice_per_slice(segmentation, reference, value)
                scores[count][value] += slice_scores
                case_scores += slice_scores
            per_case[case][str(count)] = float(np.mean(case_scores)) if case_scores else None

    results = []
    for count in clusters:
        per_label = {names[value]: float(np.mean(scores[count][value])) if scores[count][value] else None for value in foreground}
        valid = [score for score in per_label.values() if score is not None]
        results.append({
            "clusters": count,
            "mean_dice": float(np.mean(valid)) if valid else None,
            "dice_per_label": per_label,
            "slices_per_label": {names[value]: len(scores[count][value]) for value in foreground},
        })
    report = {
        "images": str(Path(images).resolve()),
        "labels": str(Path(labels).resolve()),
        "checkpoint": None if checkpoint is None else str(Path(checkpoint).resolve()),
        "checkpoint_sha256": sha256,
        "preset": encoder.preset_name,
        "img_size": encoder.img_size,
        "mode": mode,
        "cases": len(pairs),
        "seed": seed,
        "dice": "2D Dice per slice containing the label, averaged over those slices of all cases",
        "results": results,
        "per_case_mean_dice": per_case,
    }
    out_dir = Path(out_dir)
    return ZeroShotResult(
        report=report,
        report_json=write_json_atomically(out_dir / "zeroshot_report.json", report),
        plot_png=save_figure_atomically(_dice_figure(results, mode), out_dir / "zeroshot_dice.png"),
    )


def pair_images_with_labels(images: Path, labels: Path) -> list[tuple[Path, Path]]:
    """Pair each NIfTI image in `images` with the label of the same case name in `labels`; list all unpaired images."""
    for folder, kind in ((images, "image"), (labels, "label")):
        if not folder.is_dir():
            raise FileNotFoundError(f"{kind.capitalize()} folder not found: {folder}. Pass a folder of NIfTI files.")
    image_files = _nifti_files(images)
    if not image_files:
        raise ValueError(f"No .nii.gz or .nii files in {images}. Pass a folder of NIfTI images.")
    label_files = {case_name(path): path for path in _nifti_files(labels)}

    pairs, problems = [], []
    for image in image_files:
        label = label_files.get(case_name(image))
        if label is None:
            problems.append(Problem(str(image), "no label file", f"{labels / (case_name(image) + '.nii.gz')}",
                                    "Add the label, or move the image out of the folder."))
            continue
        image_size, label_size = _header_size(image), _header_size(label)
        if image_size != label_size:
            problems.append(Problem(str(label), f"size {label_size}", f"the image's size {image_size}",
                                    "Resample the label onto the image grid."))
            continue
        pairs.append((image, label))
    if problems:
        raise ValidationError(problems, "Images and labels do not pair up")
    return pairs


def _header_size(path: Path) -> tuple[int, ...]:
    """Return the image size in voxels (x, y, z), read from the header only."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    return reader.GetSize()


def _label_values(paths) -> list[int]:
    """Return the sorted label values found in the label files, background 0 included."""
    values = {0}
    for path in paths:
        values |= {int(value) for value in np.unique(sitk.GetArrayFromImage(sitk.ReadImage(str(path))))}
    return sorted(values)


def _nifti_files(folder: Path) -> list[Path]:
    return sorted(path for path in folder.iterdir() if path.is_file() and not path.name.startswith(".") and path.name.endswith(NIFTI_SUFFIXES))


def _label_names(labels: Path, values: Sequence[int]) -> dict[int, str]:
    """Name labels from the dataset.json next to the label folder, where there is one; else by value."""
    names = {value: str(value) for value in values}
    dataset_json = labels.parent / "dataset.json"
    if dataset_json.is_file():
        try:
            declared = json.loads(dataset_json.read_text(encoding="utf-8"))["labels"]
        except (ValueError, KeyError) as error:
            logger.warning("Ignoring label names in %s: %s", dataset_json, error)
            return names
        for name, value in declared.items():
            if isinstance(value, int) and value in names:
                names[value] = name
    return names


def _dice_figure(results: list[dict], mode: str):
    from matplotlib.figure import Figure

    figure = Figure(figsize=(5, 3.5))
    axes = figure.add_subplot()
    counts = [row["clusters"] for row in results]
    for name in results[0]["dice_per_label"]:
        values = [row["dice_per_label"][name] for row in results]
        axes.plot(counts, [np.nan if value is None else value for value in values], marker="o", label=name)
    axes.plot(counts, [np.nan if row["mean_dice"] is None else row["mean_dice"] for row in results],
              marker="s", color="black", linestyle="--", label="mean")
    axes.set_xscale("log", base=2)
    axes.set_xticks(counts, [str(count) for count in counts])
    axes.set_ylim(0, 1)
    axes.set_xlabel("number of k-means clusters")
    axes.set_ylabel("2D Dice")
    axes.set_title(f"Zero-shot clustering ({mode} level)")
    axes.grid(alpha=0.3)
    axes.legend()
    return figure


def segment_from_prompt(
    image: str | os.PathLike,
    output: str | os.PathLike,
    point: Sequence[int] | None = None,
    box: Sequence[int] | None = None,
    threshold: float | None = None,
    checkpoint: str | os.PathLike | None = None,
    preset: str = "tiny",
    img_size: int | None = None,
    device: str | torch.device = "cpu",
    batch_size: int = 16,
    similarity_map: str | os.PathLike | None = None,
    seed: int = 0,
) -> PromptResult:
    """Segment every slice of a volume where patch features resemble those at a clicked point or box.

    `point` is (z, y, x) and `box` is (z, y0, x0, y1, x1), with corners included, in voxel indices of
    the SimpleITK array (numpy order). The prototype is the mean normalised feature of the patches
    under the prompt on slice z. Voxels whose cosine similarity to it, upsampled bilinearly to the
    image grid, exceeds `threshold` are marked 1. The default threshold is Otsu's on all similarity
    values of the volume. The mask is written as a uint8 NIfTI with the input's geometry; the
    similarity map too, as float32, when `similarity_map` is given.
    """
    if (point is None) == (box is None):
        raise ValueError("Give exactly one prompt: a point (z, y, x) or a box (z, y0, x0, y1, x1).")
    source, array = read_volume(image)
    depth, height, width = array.shape
    z, y0, x0, y1, x1 = _prompt_bounds(point, box, array.shape)

    encoder, _ = seeded_encoder(checkpoint, preset, img_size, device, seed)
    features = patch_features(encoder, array, batch_size)  # Z x C x h x w
    grid_h, grid_w = features.shape[2:]
    # Patch rows and columns that contain the centres of the prompt's corner pixels. The patch grid
    # spans the whole slice, so pixel centre y + 0.5 lies in patch row floor((y + 0.5) * h / Y).
    rows = slice((2 * y0 + 1) * grid_h // (2 * height), (2 * y1 + 1) * grid_h // (2 * height) + 1)
    columns = slice((2 * x0 + 1) * grid_w // (2 * width), (2 * x1 + 1) * grid_w // (2 * width) + 1)
    prototype = F.normalize(features[z, :, rows, columns].mean(dim=(1, 2)), dim=0)  # C

    similarity = torch.einsum("zchw,c->zhw", features, prototype)  # Z x h x w
    similarity = F.interpolate(similarity[:, None], size=(height, width), mode="bilinear", align_corners=False)[:, 0]
    similarity = similarity.cpu().numpy()  # Z x Y x X
    if threshold is None:
        threshold = otsu_threshold(similarity)
        logger.info("Otsu threshold on the cosine similarity: %.4f", threshold)
    mask = (similarity > threshold).astype(np.uint8)  # Z x Y x X

    output = write_image_atomically(_like(mask, source), output)
    written_map = None
    if similarity_map is not None:
        written_map = write_image_atomically(_like(similarity.astype(np.float32), source), similarity_map)
    return PromptResult(output, float(threshold), int(mask.sum()), int(mask.size), written_map)


def _prompt_bounds(point: Sequence[int] | None, box: Sequence[int] | None, shape: tuple[int, int, int]) -> tuple[int, int, int, int, int]:
    """Check a prompt against the Z x Y x X shape; return (z, y0, x0, y1, x1)."""
    if point is not None:
        if len(point) != 3:
            raise ValueError(f"A point prompt is (z, y, x), got {list(point)}.")
        z, y, x = (int(value) for value in point)
        y0, x0, y1, x1 = y, x, y, x
    else:
        if len(box) != 5:
            raise ValueError(f"A box prompt is (z, y0, x0, y1, x1), got {list(box)}.")
        z, y0, x0, y1, x1 = (int(value) for value in box)
        if y0 > y1 or x0 > x1:
            raise ValueError(f"Box corners ({y0}, {x0}) and ({y1}, {x1}) are in the wrong order; give y0 <= y1 and x0 <= x1.")
    for name, value, size in (("z", z, shape[0]), ("y", y0, shape[1]), ("y", y1, shape[1]), ("x", x0, shape[2]), ("x", x1, shape[2])):
        if not 0 <= value < size:
            raise ValueError(
                f"Prompt {name} = {value} is outside the volume, whose array shape is {shape} (z, y, x). "
                f"Give {name} from 0 to {size - 1}."
            )
    return z, y0, x0, y1, x1


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Return Otsu's threshold: the histogram cut that maximises the between-class variance."""
    values = np.asarray(values, dtype=np.float64).ravel()
    low, high = values.min(), values.max()
    if low == high:
        return float(low)
    counts, edges = np.histogram(values, bins=bins, range=(low, high))
    centres = (edges[:-1] + edges[1:]) / 2
    weight_low = np.cumsum(counts)[:-1]  # pixels at or below each cut
    weight_high = counts.sum() - weight_low
    sum_low = np.cumsum(counts * centres)[:-1]
    mean_low = sum_low / np.maximum(weight_low, 1)
    mean_high = (np.sum(counts * centres) - sum_low) / np.maximum(weight_high, 1)
    between = weight_low * weight_high * (mean_low - mean_high) ** 2
    return float(edges[1:-1][between.argmax()])


def _like(array: np.ndarray, reference: sitk.Image) -> sitk.Image:
    """Wrap a Z x Y x X array as an image with the reference's geometry (2D references take Y x X)."""
    image = sitk.GetImageFromArray(array[0] if reference.GetDimension() == 2 else array)
    image.CopyInformation(reference)
    return image
