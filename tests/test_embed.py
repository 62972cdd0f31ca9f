"""Tests of slice and volume embedding of NIfTI volumes with the tiny encoder."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from mricore_nnunet.checkpoints import file_sha256, save_encoder_checkpoint
from mricore_nnunet.embed import case_name, embed_images
from mricore_nnunet.encoder import PRESETS, MRICoreEncoder

HIPPOCAMPUS = Path(__file__).resolve().parents[1] / "mricore_nnunet" / "demo_data" / "Dataset004_Hippocampus" / "imagesTr"
TINY_CHANS = PRESETS["tiny"].neck_chans


def write_volume(path: Path, shape: tuple[int, int, int], seed: int) -> Path:
    """Write a random Z x Y x X float volume as NIfTI."""
    array = np.random.default_rng(seed).normal(100.0, 20.0, size=shape).astype(np.float32)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((0.8, 0.8, 3.0))
    sitk.WriteImage(image, str(path))
    return path


@pytest.fixture
def volumes(tmp_path) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    write_volume(folder / "case_a_0000.nii.gz", (5, 40, 30), seed=0)
    write_volume(folder / "case_b.nii", (3, 24, 24), seed=1)
    (folder / ".hidden_0000.nii.gz").write_bytes(b"not an image")
    (folder / "notes.txt").write_text("ignored")
    return folder


def test_embed_folder_shapes(tmp_path, volumes, caplog):
    out_dir = tmp_path / "out"
    with caplog.at_level(logging.WARNING, logger="mricore_nnunet.embed"):
        outputs = embed_images([volumes], out_dir, preset="tiny", img_size=64, batch_size=2)

    assert [path.name for path in outputs] == ["case_a.npz", "case_b.npz"]
    assert "randomly initialised" in caplog.text
    for path, slices in zip(outputs, (5, 3)):
        with np.load(path) as data:
            assert data["slice_embeddings"].shape == (slices, TINY_CHANS)
            assert data["slice_embeddings"].dtype == np.float32
            assert data["volume_embedding"].shape == (TINY_CHANS,)
            assert np.isfinite(data["slice_embeddings"]).all()
            np.testing.assert_allclose(data["volume_embedding"], data["slice_embeddings"].mean(axis=0), rtol=1e-6)
            assert str(data["checkpoint_sha256"]) == ""
            assert str(data["preset"]) == "tiny"
            assert int(data["img_size"]) == 64
    assert sorted(child.name for child in out_dir.iterdir()) == ["case_a.npz", "case_b.npz"]


def test_embed_skips_existing_outputs(tmp_path, volumes):
    out_dir = tmp_path / "out"
    first = embed_images([volumes], out_dir, img_size=64)
    stamps = [path.stat().st_mtime_ns for path in first]
    with np.load(first[0]) as data:
        before = data["slice_embeddings"].copy()

    second = embed_images([volumes], out_dir, img_size=64)
    assert second == first
    assert [path.stat().st_mtime_ns for path in second] == stamps

    third = embed_images([volumes], out_dir, img_size=64, overwrite=True)
    assert third == first
    with np.load(third[0]) as data:
        # A fresh random encoder gives other embeddings, which shows the file was recomputed.
        assert not np.array_equal(data["slice_embeddings"], before)


def test_embed_hippocampus_with_checkpoint(tmp_path):
    torch.manual_seed(0)
    checkpoint = save_encoder_checkpoint(MRICoreEncoder("tiny", img_size=64), tmp_path / "tiny.pth")
    files = sorted(HIPPOCAMPUS.glob("*.nii.gz"))[:2]

    outputs = embed_images(files, tmp_path / "out", checkpoint=checkpoint)

    assert [path.name for path in outputs] == [case_name(file) + ".npz" for file in files]
    assert outputs[0].name == "hippocampus_001.npz"
    for file, path in zip(files, outputs):
        depth = sitk.GetArrayFromImage(sitk.ReadImage(str(file))).shape[0]
        with np.load(path) as data:
            assert data["slice_embeddings"].shape == (depth, TINY_CHANS)
            assert np.isfinite(data["slice_embeddings"]).all()
            assert np.isfinite(data["volume_embedding"]).all()
            assert str(data["checkpoint_sha256"]) == file_sha256(checkpoint)
            assert int(data["img_size"]) == 64  # from the checkpoint metadata


def test_embed_rejects_colliding_case_names(tmp_path):
    write_volume(tmp_path / "same.nii.gz", (2, 16, 16), seed=0)
    write_volume(tmp_path / "same_0000.nii", (2, 16, 16), seed=1)
    with pytest.raises(ValueError, match="both give the case name 'same'"):
        embed_images([tmp_path / "same.nii.gz", tmp_path / "same_0000.nii"], tmp_path / "out")


def test_embed_rejects_bad_inputs(tmp_path):
    with pytest.raises(FileNotFoundError, match="Input not found"):
        embed_images([tmp_path / "absent.nii.gz"], tmp_path / "out")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="No .nii.gz or .nii files"):
        embed_images([empty], tmp_path / "out")
    text = tmp_path / "scan.txt"
    text.write_text("x")
    with pytest.raises(ValueError, match="not a NIfTI file"):
        embed_images([text], tmp_path / "out")


def test_case_name_strips_suffixes():
    assert case_name(Path("a/hippocampus_001_0000.nii.gz")) == "hippocampus_001"
    assert case_name(Path("brain.nii")) == "brain"
    assert case_name(Path("brain_0001.nii.gz")) == "brain_0001"
