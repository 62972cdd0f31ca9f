"""Slice and volume embeddings of NIfTI volumes from the MRI-CORE encoder.

Each volume is cut into 2D slices along numpy axis 0 of SimpleITK's array (the slowest-varying
image axis, usually the acquisition axis), each slice is resized to img_size x img_size and
encoded. A slice's embedding is the neck output averaged over space, and the volume's embedding
is the mean of its slice embeddings. One `<case>.npz` is written per volume.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import SimpleITK as sitk
import torch
import torch.nn.functional as F
from tqdm import tqdm

from .atomic import atomic_path
from .checkpoints import build_encoder_from_checkpoint, read_checkpoint
from .encoder import MRICoreEncoder, check_input_size

logger = logging.getLogger(__name__)

NIFTI_SUFFIXES = (".nii.gz", ".nii")
DEFAULT_IMG_SIZE = 256
# nnU-Net names the first channel of a case '<case>_0000'.
CHANNEL_SUFFIX = "_0000"


def embed_images(
    inputs: Iterable[str | os.PathLike],
    out_dir: str | os.PathLike,
    checkpoint: str | os.PathLike | None = None,
    preset: str = "tiny",
    img_size: int | None = None,
    device: str | torch.device = "cpu",
    batch_size: int = 16,
    overwrite: bool = False,
) -> list[Path]:
    """Write one `<case>.npz` of embeddings per NIfTI volume and return the output paths.

    Args:
        inputs: NIfTI files and folders. A folder contributes every `*.nii.gz` and `*.nii` file
            directly inside it, hidden files excepted.
        out_dir: folder for the `.npz` files, created if missing.
        checkpoint: encoder checkpoint of any layout `mricore_nnunet.checkpoints` reads. With a
            checkpoint, the architecture comes from the checkpoint and `preset` is not used.
            Without one, the encoder of `preset` is randomly initialised.
        img_size: side each slice is resized to, a multiple of 16. Defaults to the checkpoint
            metadata's img_size, else 256.
        device: torch device for the encoder.
        batch_size: number of slices per forward pass.
        overwrite: recompute outputs that already exist instead of skipping them.

    Each `.npz` contains `slice_embeddings` (Z x C float32), `volume_embedding` (C float32),
    `checkpoint_sha256` (empty without a checkpoint), `preset` and `img_size`. Outputs of all
    inputs are returned in input order, skipped ones included.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
    cases = _collect_cases(inputs)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    outputs = [out_dir / f"{case}.npz" for case, _ in cases]
    todo = [(case, image, output) for (case, image), output in zip(cases, outputs) if overwrite or not output.exists()]
    skipped = len(cases) - len(todo)
    if skipped:
        logger.info("Skipping %d of %d volumes whose embeddings exist in %s (overwrite=False).", skipped, len(cases), out_dir)
    if not todo:
        return outputs

    encoder, checkpoint_sha256 = build_encoder(checkpoint, preset, img_size)
    encoder = encoder.to(device).eval()

    for case, image, output in tqdm(todo, desc="Embedding volumes", unit="volume"):
        slice_embeddings = _embed_volume(encoder, image, batch_size)
        _save_npz_atomically(
            output,
            slice_embeddings=slice_embeddings,
            volume_embedding=slice_embeddings.mean(axis=0),
            checkpoint_sha256=np.array(checkpoint_sha256),
            preset=np.array(encoder.preset_name),
            img_size=np.array(encoder.img_size),
        )
        logger.debug("Wrote %s (%d slices) for %s.", output, slice_embeddings.shape[0], image)
    return outputs


def case_name(path: Path) -> str:
    """Return the case identifier of a NIfTI file: the name without suffix and channel suffix `_0000`."""
    name = path.name
    for suffix in NIFTI_SUFFIXES:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return name.removesuffix(CHANNEL_SUFFIX)


def _collect_cases(inputs: Iterable[str | os.PathLike]) -> list[tuple[str, Path]]:
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    files: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(
                child
                for child in path.iterdir()
                if child.is_file() and not child.name.startswith(".") and child.name.endswith(NIFTI_SUFFIXES)
            )
            if not found:
                raise ValueError(f"No .nii.gz or .nii files in folder {path}. Pass a folder of NIfTI volumes.")
            files += found
        elif path.is_file():
            if not path.name.endswith(NIFTI_SUFFIXES):
                raise ValueError(f"{path} is not a NIfTI file (.nii.gz or .nii). Convert it to NIfTI first.")
            files.append(path)
        else:
            raise FileNotFoundError(f"Input not found: {path}. Pass existing NIfTI files or folders.")

    cases: list[tuple[str, Path]] = []
    seen: dict[str, Path] = {}
    for file in files:
        case = case_name(file)
        if case in seen:
            raise ValueError(
                f"{seen[case]} and {file} both give the case name {case!r}, so their outputs would collide. "
                "Embed them into different output folders."
            )
        seen[case] = file
        cases.append((case, file))
    return cases


def build_encoder(
    checkpoint: str | os.PathLike | None, preset: str, img_size: int | None
) -> tuple[MRICoreEncoder, str]:
    """Build the encoder from a checkpoint, or randomly initialised from `preset` without one.

    Returns the encoder and the checkpoint's sha256 (empty without a checkpoint). `img_size` defaults to
    the checkpoint metadata's img_size, else 256.
    """
    if checkpoint is None:
        size = img_size or DEFAULT_IMG_SIZE
        logger.warning(
            "No checkpoint given: the '%s' encoder is randomly initialised, so the embeddings carry no "
            "pretrained knowledge. Pass checkpoint= for meaningful features.",
            preset,
        )
        return MRICoreEncoder(preset, img_size=size, in_chans=1), ""

    loaded = read_checkpoint(checkpoint)
    size = img_size or loaded.metadata.get("img_size") or DEFAULT_IMG_SIZE
    encoder, report = build_encoder_from_checkpoint(loaded, img_size=int(size), in_chans=1)
    return encoder, report.sha256


def read_volume(path: str | os.PathLike) -> tuple[sitk.Image, np.ndarray]:
    """Read a grey-value NIfTI volume; return the image and its Z x Y x X float32 array (Z = 1 for 2D)."""
    image = sitk.ReadImage(str(path))
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise ValueError(
            f"{path} has {image.GetNumberOfComponentsPerPixel()} components per voxel, but expected a grey-value "
            "volume. Split the channels into separate files."
        )
    array = sitk.GetArrayFromImage(image).astype(np.float32)  # Z x Y x X, or Y x X for a 2D image
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3:
        raise ValueError(
            f"{path} has {image.GetDimension()} dimensions (array shape {array.shape}), but expected a 2D or 3D "
            "volume. Split 4D series into 3D volumes."
        )
    return image, array


@torch.inference_mode()
def encode_slices(encoder: MRICoreEncoder, array: np.ndarray, batch_size: int) -> Iterator[torch.Tensor]:
    """Yield the encoder's neck features of a Z x Y x X array, batch_size slices at a time.

    Each slice is resized to the encoder's img_size, so each yielded batch is B x C x S/16 x S/16 with
    S = img_size, on the encoder's device. The patch grid covers the whole Y x X slice.
    """
    size = encoder.img_size
    check_input_size(size, size)
    device = next(encoder.parameters()).device
    for start in range(0, array.shape[0], batch_size):
        slices = torch.from_numpy(array[start : start + batch_size]).to(device)[:, None]  # B x 1 x Y x X
        slices = F.interpolate(slices, size=(size, size), mode="bilinear", align_corners=False)  # B x 1 x S x S
        yield encoder(slices)  # B x C x S/16 x S/16


def _embed_volume(encoder: MRICoreEncoder, path: Path, batch_size: int) -> np.ndarray:
    """Return the Z x C slice embeddings of one volume."""
    _, array = read_volume(path)
    embeddings = [features.mean(dim=(2, 3)).float().cpu() for features in encode_slices(encoder, array, batch_size)]  # B x C each
    return torch.cat(embeddings).numpy()  # Z x C


def _save_npz_atomically(path: Path, **arrays: np.ndarray) -> None:
    with atomic_path(path) as temporary, open(temporary, "wb") as file:
        np.savez(file, **arrays)