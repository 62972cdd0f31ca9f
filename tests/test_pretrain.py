"""Tests of self-supervised pre-training (`mricore_nnunet.ssl`, `mricore_nnunet pretrain`): losses, data, runs, resume, DDP."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from mricore_nnunet import cli, training
from mricore_nnunet.checkpoints import build_encoder_from_checkpoint, read_checkpoint
from mricore_nnunet.network import MRICoreSegmentationNetwork
from mricore_nnunet.plan import pretrain_info_for
from mricore_nnunet.ssl import NonFiniteLossError, PretrainConfig, SliceIndex, pretrain, trainer
from mricore_nnunet.ssl.augment import MultiCrop
from mricore_nnunet.ssl.batches import IterationBatchSampler, MultiCropDataset, collate_crops
from mricore_nnunet.ssl.dino_loss import DINOLoss
from mricore_nnunet.ssl.ibot_loss import IBOTPatchLoss
from mricore_nnunet.ssl.koleo import koleo_loss
from mricore_nnunet.ssl.masking import block_mask
from mricore_nnunet.ssl.sinkhorn import sinkhorn_knopp

REPO = Path(__file__).resolve().parents[1]

# Small enough for 2 CPU cores: the tiny preset on 64 px global and 32 px local crops, small heads.
TINY_RUN = dict(
    preset="tiny", batch_size=4, global_size=64, local_size=32, num_local_crops=2, num_prototypes=128,
    head_hidden_dim=64, head_bottleneck_dim=32, log_every=5,
)


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Run on one thread: on 2 shared cores, two intra-op threads made a tiny run about 10 times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_config(data, out, **overrides) -> PretrainConfig:
    return PretrainConfig(data=[str(path) for path in data], out=str(out), **{**TINY_RUN, **overrides})


def write_volume(path: Path, array: np.ndarray, spacing=(1.0, 1.0, 1.0)) -> Path:
    """Write a z x y x x (or t x z x y x x) array as NIfTI; spacing in SimpleITK's x, y, z order."""
    image = sitk.GetImageFromArray(array.astype(np.float32), isVector=False)
    image.SetSpacing(tuple(spacing) + (1.0,) * (image.GetDimension() - len(spacing)))
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path))
    return path


def textured_volume(shape, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).normal(100.0, 20.0, size=shape).astype(np.float32)


# Losses ---------------------------------------------------------------------------------------------


def test_dino_loss_hand_computed():
    loss = DINOLoss(num_prototypes=2, student_temp=1.0)
    student = [torch.tensor([[0.0, 0.0]]), torch.tensor([[1.0, 0.0]])]
    targets = [torch.tensor([[1.0, 0.0]]), torch.tensor([[0.5, 0.5]])]
    # Pairs (teacher 0, student 1): log(1 + e^-1); (teacher 1, student 0): log 2.
    expected = (math.log(1 + math.exp(-1)) + math.log(2)) / 2
    assert loss(student, targets).item() == pytest.approx(expected, abs=1e-6)


def test_dino_loss_local_crops_pair_with_both_teachers():
    loss = DINOLoss(num_prototypes=2, student_temp=1.0)
    student = [torch.zeros(1, 2), torch.zeros(1, 2), torch.tensor([[2.0, 0.0]])]
    targets = [torch.tensor([[0.0, 1.0]]), torch.tensor([[0.0, 1.0]])]
    # Four pairs: two global-global with log 2, two with the local crop with log(1 + e^2).
    expected = (2 * math.log(2) + 2 * math.log(1 + math.exp(2))) / 4
    assert loss(student, targets).item() == pytest.approx(expected, abs=1e-6)


def test_dino_centring_and_center_update():
    loss = DINOLoss(num_prototypes=2, center_momentum=0.9)
    loss.center.copy_(torch.tensor([[0.5, 0.5]]))
    targets = loss.teacher_targets(torch.tensor([[1.0, 0.0]]), teacher_temp=0.5)
    assert targets[0, 0].item() == pytest.approx(1 / (1 + math.exp(-2)), abs=1e-6)

    loss.update_center(torch.tensor([[1.0, 3.0], [3.0, 1.0]]))
    assert loss.center[0].tolist() == pytest.approx([0.9 * 0.5 + 0.1 * 2.0] * 2)


def test_ibot_loss_weighs_images_equally():
    loss = IBOTPatchLoss(num_prototypes=2, student_temp=1.0)
    student = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    targets = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    image_index = torch.tensor([0, 0, 1])
    ce_uniform, ce_right, ce_wrong = math.log(2), math.log(1 + math.exp(-1)), math.log(1 + math.exp(1))
    expected = ((ce_uniform + ce_right) / 2 + ce_wrong) / 2
    assert loss(student, targets, image_index, num_images=2).item() == pytest.approx(expected, abs=1e-6)


def test_ibot_loss_without_masked_patches_is_zero():
    loss = IBOTPatchLoss(num_prototypes=2)
    value = loss(torch.zeros(0, 2), torch.zeros(0, 2), torch.zeros(0, dtype=torch.long), num_images=1)
    assert value.item() == 0.0


def test_koleo_hand_computed():
    features = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-2.0, 0.0]])  # normalised: every nearest distance is sqrt 2
    assert koleo_loss(features).item() == pytest.approx(-math.log(math.sqrt(2)), abs=1e-6)


def test_koleo_finite_on_duplicates():
    features = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], requires_grad=True)
    value = koleo_loss(features, eps=1e-8)
    value.backward()
    assert torch.isfinite(value)
    assert value.item() == pytest.approx((2 * -math.log(1e-8) - math.log(math.sqrt(2))) / 3, rel=1e-5)
    assert torch.isfinite(features.grad).all()


def test_koleo_rejects_single_sample():
    with pytest.raises(ValueError, match="at least 2 samples"):
        koleo_loss(torch.ones(1, 4))


def test_sinkhorn_balances_prototypes():
    logits = torch.randn(6, 3, generator=torch.Generator().manual_seed(0))
    targets = sinkhorn_knopp(logits, temperature=0.5, iterations=100)
    assert targets.shape == (6, 3)
    assert targets.sum(dim=1).tolist() == pytest.approx([1.0] * 6, abs=1e-5)
    assert targets.sum(dim=0).tolist() == pytest.approx([2.0] * 3, abs=1e-3)


def test_block_mask_count_close_to_target():
    mask = block_mask(grid=14, num_masked=60, generator=torch.Generator().manual_seed(1))
    assert 40 <= int(mask.sum()) <= 60


# Data -----------------------------------------------------------------------------------------------


def test_slice_index_skips_blank_slices(tmp_path):
    volume = textured_volume((6, 20, 24))
    volume[0] = 0.0  # blank
    volume[5] = 7.0  # constant
    volume[3] = 50.0 + np.random.default_rng(1).normal(0, 0.01, size=(20, 24))  # near-constant
    write_volume(tmp_path / "plain" / "case.nii.gz", volume)

    index = SliceIndex([tmp_path / "plain"])
    assert len(index) == 3
    assert index.manifest()["slices_skipped"] == 3
    assert index.manifest()["files"][0]["volumes"][0]["slices_used"] == 3
    assert index[0].shape == (20, 24)


def test_slice_index_uses_axis_of_largest_spacing(tmp_path):
    # SimpleITK spacing (x, y, z) = (0.5, 5, 0.5): numpy axis 1 (y) is the acquisition axis.
    write_volume(tmp_path / "case.nii.gz", textured_volume((8, 5, 12)), spacing=(0.5, 5.0, 0.5))
    index = SliceIndex([tmp_path])
    assert len(index) == 5
    assert index[0].shape == (8, 12)

    forced = SliceIndex([tmp_path], slice_axis=2)
    assert len(forced) == 12
    assert forced[0].shape == (8, 5)


def test_slice_index_reads_nnunet_msd_and_plain_folders(tmp_path):
    nnunet = tmp_path / "Dataset001_Test"
    write_volume(nnunet / "imagesTr" / "a_0000.nii.gz", textured_volume((3, 16, 16), 1))
    write_volume(nnunet / "imagesTs" / "b_0000.nii.gz", textured_volume((4, 16, 16), 2))
    write_volume(nnunet / "labelsTr" / "a.nii.gz", np.ones((3, 16, 16)))  # must not be read
    msd = tmp_path / "Task01_Test"
    write_volume(msd / "imagesTr" / "c.nii.gz", textured_volume((2, 5, 16, 16), 3))  # 2 channels of 5 slices
    plain = tmp_path / "plain"
    write_volume(plain / "sub" / "d.nii", textured_volume((6, 16, 16), 4))

    index = SliceIndex([nnunet, msd, plain])
    paths = [Path(record["path"]).name for record in index.manifest()["files"]]
    assert paths == ["a_0000.nii.gz", "b_0000.nii.gz", "c.nii.gz", "d.nii"]
    assert [volume.channel for volume in index.volumes] == [None, None, 0, 1, None]
    assert len(index) == 3 + 4 + 2 * 5 + 6


def test_slice_index_missing_folder_message(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither a file nor a folder"):
        SliceIndex([tmp_path / "missing"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="No NIfTI files"):
        SliceIndex([tmp_path / "empty"])


def test_batches_depend_only_on_position(bundled_dataset):
    index = SliceIndex([bundled_dataset / "imagesTs"], cache_volumes=2)
    multicrop = MultiCrop(64, 32, 2, (0.32, 1.0), (0.05, 0.32), 10.0)
    dataset = MultiCropDataset(index, multicrop, seed=3, mask_probability=0.5, mask_ratio=(0.1, 0.5))
    first = collate_crops([dataset[position] for position in range(8, 12)])
    again = collate_crops([dataset[position] for position in range(8, 12)])
    assert first["global"].shape == (8, 1, 64, 64)
    assert first["local"].shape == (8, 1, 32, 32)
    assert first["masks"].shape == (8, 4, 4)
    assert torch.equal(first["global"], again["global"])
    assert torch.equal(first["masks"], again["masks"])

    sampler = IterationBatchSampler(start=2, end=3, batch_size=4, rank=1, world_size=2)
    assert list(sampler) == [[20, 21, 22, 23]]


# Runs -----------------------------------------------------------------------------------------------


def test_short_run_learns_and_exports(bundled_dataset, tmp_path):
    config = tiny_config([bundled_dataset], tmp_path / "run", iterations=30, batch_size=8, lr=0.02,
                         warmup_iterations=3, save_every=100)
    result = pretrain(config)

    # The loss itself can rise early while centring flattens the teacher. The student-teacher KL
    # (loss minus teacher entropy) falls as the student learns to match the teacher.
    kl = [entry["dino_kl"] for entry in result.history]
    assert np.mean(kl[-5:]) < 0.7 * np.mean(kl[:5])
    assert all(np.isfinite(entry["loss"]) for entry in result.history)
    assert result.history[-1]["feature_std"] > 1e-3

    manifest = json.loads(result.manifest_path.read_text(encoding="utf-8"))
    assert manifest["slices_used"] > 0
    bundled_files = list((bundled_dataset / "imagesTr").glob("*.nii.gz")) + list((bundled_dataset / "imagesTs").glob("*.nii.gz"))
    assert len(manifest["files"]) == len(bundled_files)
    encoder, report = build_encoder_from_checkpoint(result.teacher_path)
    assert encoder.preset_name == "tiny"
    assert encoder.img_size == 64
    metadata = read_checkpoint(result.teacher_path).metadata
    assert metadata["pretraining"]["iterations"] == 30
    assert metadata["pretraining"]["data_manifest_sha256"] == manifest["sha256"]
    assert cli.main(["inspect-checkpoint", str(result.teacher_path)]) == 0

    # The planner and the trainers take the teacher without options: the plans record it, and the
    # segmentation network's encoder receives exactly its weights.
    info = pretrain_info_for(result.teacher_path, None, 64, random_init=False)
    assert info["preset"] == "tiny"
    assert info["layout"] == "mricore_nnunet"
    network = MRICoreSegmentationNetwork(1, 3, preset=info["preset"], img_size=64, normalization=info["normalization"])
    training.load_pretrained_encoder(network, str(result.teacher_path), info["sha256"])
    teacher = torch.load(result.teacher_path, map_location="cpu", weights_only=True)["state_dict"]
    for key, tensor in teacher.items():
        assert torch.equal(network.encoder.state_dict()[key], tensor), key


def test_bfloat16_autocast_run(bundled_dataset, tmp_path):
    """--amp runs the forward passes in bfloat16 through torch.autocast, the code path that CUDA uses too."""
    settings = dict(iterations=12, batch_size=8, lr=0.02, warmup_iterations=2, save_every=100)
    full = pretrain(tiny_config([bundled_dataset], tmp_path / "fp32", **settings))
    mixed = pretrain(tiny_config([bundled_dataset], tmp_path / "bf16", amp=True, **settings))

    first_full, first_mixed = full.history[0]["loss"], mixed.history[0]["loss"]
    # Same data, crops and weights, so only bfloat16 rounding separates the first losses.
    assert first_mixed != first_full
    assert abs(first_mixed - first_full) < 0.05 * abs(first_full)
    assert all(np.isfinite(entry["loss"]) for entry in mixed.history)
    kl = [entry["dino_kl"] for entry in mixed.history]
    assert np.mean(kl[-3:]) < np.mean(kl[:3])
    teacher = _teacher_tensors(mixed.teacher_path)
    assert all(tensor.dtype == torch.float32 for tensor in teacher.values() if tensor.is_floating_point())


def _teacher_tensors(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def test_resume_after_kill_matches_uninterrupted_run(bundled_dataset, tmp_path, monkeypatch):
    data = [bundled_dataset / "imagesTs"]
    uninterrupted = pretrain(tiny_config(data, tmp_path / "once", iterations=6, save_every=2))

    # Kill the run during iteration 5: last.pt is from iteration 4, iteration 5 is lost.
    original_step = trainer._Run._step

    def step_then_die(self, batch, iteration):
        if iteration == 4:
            raise KeyboardInterrupt("simulated kill")
        return original_step(self, batch, iteration)

    monkeypatch.setattr(trainer._Run, "_step", step_then_die)
    with pytest.raises(KeyboardInterrupt):
        pretrain(tiny_config(data, tmp_path / "twice", iterations=6, save_every=2))
    monkeypatch.setattr(trainer._Run, "_step", original_step)
    assert not (tmp_path / "twice" / "teacher_encoder.pth").exists()

    resumed = pretrain(tiny_config(data, tmp_path / "twice", iterations=6, save_every=2))
    assert resumed.start_iteration == 4

    expected = _teacher_tensors(uninterrupted.teacher_path)
    actual = _teacher_tensors(resumed.teacher_path)
    assert expected.keys() == actual.keys()
    for key in expected:
        assert torch.equal(expected[key], actual[key]), key
    assert [entry["loss"] for entry in resumed.history] == [entry["loss"] for entry in uninterrupted.history[4:]]


def test_stop_after_then_same_command_continues(bundled_dataset, tmp_path, capsys):
    command = ["pretrain", "--data", str(bundled_dataset / "imagesTs"), "--out", str(tmp_path / "run"),
               "--preset", "tiny", "--iterations", "4", "--batch-size", "4", "--global-size", "64",
               "--local-size", "32", "--num-local-crops", "1", "--num-prototypes", "64", "--head-hidden-dim", "32",
               "--head-bottleneck-dim", "16", "--save-every", "10", "--sinkhorn"]
    assert cli.main(command + ["--stop-after", "2"]) == 0
    assert "Rerun the same command" in capsys.readouterr().out
    assert cli.main(command) == 0
    assert "Teacher encoder written" in capsys.readouterr().out
    lines = (tmp_path / "run" / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["iteration"] for line in lines] == [1, 2, 3, 4]


def test_resume_rejects_changed_schedule(bundled_dataset, tmp_path):
    data = [bundled_dataset / "imagesTs"]
    pretrain(tiny_config(data, tmp_path / "run", iterations=4, stop_after=1))
    with pytest.raises(ValueError, match="iterations: saved 4, now 5"):
        pretrain(tiny_config(data, tmp_path / "run", iterations=5))


def test_nonfinite_loss_stops_with_message(bundled_dataset, tmp_path, monkeypatch):
    monkeypatch.setattr(trainer, "koleo_loss", lambda features: features.sum() * float("nan"))
    with pytest.raises(NonFiniteLossError, match=r"iteration 1 of 3: koleo loss = nan.*Lower --lr"):
        pretrain(tiny_config([bundled_dataset / "imagesTs"], tmp_path / "run", iterations=3))


def test_two_process_gloo_run(bundled_dataset, tmp_path):
    out = tmp_path / "ddp"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "mricore_nnunet.cli", "pretrain", "--data", str(bundled_dataset / "imagesTs"), "--out", str(out),
        "--preset", "tiny", "--iterations", "3", "--batch-size", "2", "--global-size", "64", "--local-size", "32",
        "--num-local-crops", "1", "--num-prototypes", "64", "--head-hidden-dim", "32", "--head-bottleneck-dim", "16",
        "--log-every", "1",
    ]
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    completed = subprocess.run(command, cwd=REPO, env=environment, capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=240)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "gloo process group" in completed.stderr
    assert "iteration 3/3" in completed.stderr
    state = torch.load(out / "last.pt", map_location="cpu", weights_only=False)
    assert state["run_identity"]["world_size"] == 2
    encoder, _ = build_encoder_from_checkpoint(out / "teacher_encoder.pth")
    assert encoder.preset_name == "tiny"


def test_init_from_checkpoint_sets_weights(bundled_dataset, tmp_path):
    from mricore_nnunet.checkpoints import save_encoder_checkpoint
    from mricore_nnunet.encoder import MRICoreEncoder

    torch.manual_seed(123)
    initial = MRICoreEncoder("tiny", img_size=96)
    init_path = save_encoder_checkpoint(initial, tmp_path / "init.pth")

    # With lr 0 the student keeps the initial weights, so the teacher (their average) does too.
    result = pretrain(tiny_config([bundled_dataset / "imagesTs"], tmp_path / "run", iterations=1, lr=0.0,
                                  init=str(init_path), preset="small"))
    encoder, _ = build_encoder_from_checkpoint(result.teacher_path)
    assert encoder.preset_name == "tiny"
    assert encoder.img_size == 64
    for key, value in initial.state_dict().items():
        if key == "vit.pos_embed":
            continue  # resized from 96 px to the 64 px global crops
        assert torch.allclose(encoder.state_dict()[key], value, atol=1e-6), key
