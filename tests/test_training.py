"""Planning decisions and the fine-tuning recipe, without nnU-Net's training loop."""

from __future__ import annotations

import json

import pytest
import torch

from mricore_nnunet import planning, training, validation
from mricore_nnunet.network import MRICoreSegmentationNetwork


def tiny_network(mode: str = "full") -> MRICoreSegmentationNetwork:
    return MRICoreSegmentationNetwork(1, 2, preset="tiny", img_size=64, decoder_channels=(8, 8, 16, 16), finetune=mode)


def test_inplane_spacing_fills_input_size():
    # 50 x 35 voxels at 1 mm: the longer 50 mm side becomes 256 pixels.
    spacing = planning.inplane_target_spacing([1.0, 1.0], [50, 35], 256)
    assert spacing == pytest.approx([50 / 256, 50 / 256])


def test_inplane_spacing_uses_physical_extent():
    # 0.5 mm x 200 voxels (100 mm) is longer than 2 mm x 40 voxels (80 mm).
    spacing = planning.inplane_target_spacing([0.5, 2.0], [200, 40], 128)
    assert spacing == pytest.approx([100 / 128, 100 / 128])


def test_memory_estimate_grows_with_size_and_batch():
    small = planning.estimate_training_memory_gib("vit_b", 256, 1)
    assert planning.estimate_training_memory_gib("vit_b", 512, 1) > small
    assert planning.estimate_training_memory_gib("vit_b", 256, 4) > small
    assert planning.estimate_training_memory_gib("tiny", 256, 1) < small


def test_batch_size_respects_memory_and_cap():
    batch, size = planning.choose_batch_size_and_input_size("vit_b", 256, memory_gib=80, max_batch_size=12)
    assert (batch, size) == (12, 256)

    batch, size = planning.choose_batch_size_and_input_size("vit_b", 256, memory_gib=4, max_batch_size=64)
    assert size == 256
    assert 2 <= batch < 64
    assert planning.estimate_training_memory_gib("vit_b", 256, batch) <= 4
    assert planning.estimate_training_memory_gib("vit_b", 256, batch + 1) > 4


def test_large_input_shrinks_on_small_device():
    """A ViT-B plan at 1024 px on an 8 GiB device falls back to a smaller input."""
    batch, size = planning.choose_batch_size_and_input_size("vit_b", 1024, memory_gib=8, max_batch_size=64)
    assert size < 1024
    assert size % 16 == 0
    assert planning.estimate_training_memory_gib("vit_b", size, batch) <= 8


def test_impossible_memory_target_raises():
    with pytest.raises(ValueError, match="more than the 0.1 GiB target"):
        planning.choose_batch_size_and_input_size("vit_b", 256, memory_gib=0.1, max_batch_size=8)


def test_round_up_to_patch_multiple():
    assert planning.round_up_to_patch_multiple([56, 40]) == [64, 64]
    assert planning.round_up_to_patch_multiple([100, 250]) == [112, 256]


def test_adapt_default_plans_for_vit():
    plans = {
        "plans_name": "nnUNetPlans",
        "configurations": {
            "2d": {"patch_size": [56, 40], "architecture": {"network_class_name": "PlainConvUNet"}},
            "3d_fullres": {"patch_size": [40, 56, 40]},
        },
    }
    adapted = training.adapt_plans_for_vit(plans, "2d", "tiny")
    configuration = adapted["configurations"]["2d"]
    assert configuration["patch_size"] == [64, 64]
    assert training.is_mricore_configuration(configuration)
    assert configuration["architecture"]["arch_kwargs"]["preset"] == "tiny"
    # The input plans are left as they were.
    assert plans["configurations"]["2d"]["patch_size"] == [56, 40]

    with pytest.raises(ValueError, match="need a 2D configuration"):
        training.adapt_plans_for_vit(plans, "3d_fullres", "tiny")


def test_checkpoint_variable_overrides_plans(monkeypatch):
    monkeypatch.delenv(training.CHECKPOINT_VARIABLE, raising=False)
    assert training.resolve_checkpoint({"checkpoint": "/plans.pth"}) == "/plans.pth"
    assert training.resolve_checkpoint({}) is None
    monkeypatch.setenv(training.CHECKPOINT_VARIABLE, "/env.pth")
    assert training.resolve_checkpoint({"checkpoint": "/plans.pth"}) == "/env.pth"


def test_recipe_reads_schedule_from_environment(monkeypatch):
    monkeypatch.setenv("MRICORE_NUM_EPOCHS", "3")
    monkeypatch.setenv("MRICORE_ITERATIONS_PER_EPOCH", "7")
    recipe = training.Recipe().with_environment()
    assert recipe.num_epochs == 3
    assert recipe.iterations_per_epoch == 7
    assert recipe.warmup_epochs == 0

    monkeypatch.setenv("MRICORE_NUM_EPOCHS", "ten")
    with pytest.raises(ValueError, match="MRICORE_NUM_EPOCHS='ten'"):
        training.Recipe().with_environment()


def test_layerwise_learning_rates():
    network = tiny_network()
    groups = training.parameter_groups(network, lr=1.0, weight_decay=0.05, layer_decay=0.5)
    assert groups[0]["part"] == "decoder"

    scale_by_parameter = {id(p): g["lr_scale"] for g in groups for p in g["params"]}
    encoder = network.encoder
    depth = encoder.depth
    assert scale_by_parameter[id(encoder.vit.patch_embed.proj.weight)] == 0.5 ** (depth + 1)
    assert scale_by_parameter[id(encoder.vit.blocks[depth - 1].mlp.fc1.weight)] == 0.5
    assert scale_by_parameter[id(encoder.vit.neck[0].weight)] == 1.0

    decay_by_parameter = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    assert decay_by_parameter[id(encoder.vit.pos_embed)] == 0.0
    assert decay_by_parameter[id(encoder.vit.blocks[0].norm1.weight)] == 0.0
    assert decay_by_parameter[id(encoder.vit.blocks[0].attn.qkv.weight)] == 0.05

    counted = sum(len(g["params"]) for g in groups)
    assert counted == len(list(network.parameters()))


def test_frozen_parameters_stay_out_of_groups():
    network = tiny_network("frozen")
    groups = training.parameter_groups(network, lr=1.0, weight_decay=0.0, layer_decay=0.5)
    assert all(g["part"] == "decoder" for g in groups)


def test_warmup_then_poly_schedule():
    network = tiny_network()
    optimizer = torch.optim.AdamW(training.parameter_groups(network, 1e-3, 0.05, 0.5))
    scheduler = training.WarmupPolyLR(optimizer, 1e-3, num_epochs=100, warmup_epochs=4)

    scheduler.step(0)
    encoder_rates = {g["lr"] for g in optimizer.param_groups if g["part"] == "encoder"}
    assert encoder_rates == {0.0}
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-3 * 1 / 4)

    scheduler.step(50)
    for group in optimizer.param_groups:
        assert group["lr"] == pytest.approx(1e-3 * group["lr_scale"] * 0.5**0.9)


def test_encoder_trainable_switch_keeps_frozen_parts():
    network = tiny_network("lora")
    trainable = {n for n, p in network.encoder.named_parameters() if p.requires_grad}
    training.set_encoder_trainable(network, False, trainable)
    assert not any(p.requires_grad for p in network.encoder.parameters())
    training.set_encoder_trainable(network, True, trainable)
    assert {n for n, p in network.encoder.named_parameters() if p.requires_grad} == trainable


def test_out_of_memory_becomes_advice():
    assert training.is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory"))
    assert training.is_out_of_memory(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate"))
    assert not training.is_out_of_memory(RuntimeError("shape mismatch"))

    message = training.out_of_memory_message(torch.device("cuda"), 12, [1024, 1024], "vit_b")
    assert "batch size 12" in message
    assert "[1024, 1024]" in message
    assert "--input-size" in message
    assert "MRICoreTrainer_frozen" in message


def test_fold_check_with_two_cases(tmp_path):
    folder = tmp_path / "Dataset007_Two"
    folder.mkdir()
    (folder / "dataset.json").write_text(json.dumps({"numTraining": 2}))
    with pytest.raises(validation.ValidationError) as raised:
        validation.check_fold_count(folder, 0)
    message = str(raised.value)
    assert "2 training case(s)" in message
    assert "nnUNetv2_train 7 2d all" in message
    assert "splits_final.json" in message


def test_fold_check_with_custom_splits(tmp_path):
    folder = tmp_path / "Dataset007_Two"
    folder.mkdir()
    (folder / "dataset.json").write_text(json.dumps({"numTraining": 2}))
    (folder / "splits_final.json").write_text(json.dumps([{"train": ["a"], "val": ["b"]}]))
    validation.check_fold_count(folder, 0)
    with pytest.raises(validation.ValidationError, match="a split for fold 3"):
        validation.check_fold_count(folder, 3)


def test_gradient_checkpointing_lowers_estimate_and_keeps_size():
    plain = planning.estimate_training_memory_gib("vit_b", 1024, 2)
    checkpointed = planning.estimate_training_memory_gib("vit_b", 1024, 2, gradient_checkpointing=True)
    assert checkpointed < plain / 2

    batch, size = planning.choose_batch_size_and_input_size(
        "vit_b", 1024, memory_gib=12, max_batch_size=64, gradient_checkpointing=True
    )
    assert size == 1024
    assert batch >= 2
