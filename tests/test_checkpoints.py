"""Tests of checkpoint reading, conversion, strict loading and saving.

Every checkpoint is built in tmp_path from small random models. The reference for the SAM and
MRI-CORE layouts is Segment Anything's own `ImageEncoderViT` (the `segment_anything` package).
"""

from __future__ import annotations

import hashlib
import logging
import pickle
from functools import partial

import numpy as np
import pytest

import torch
from segment_anything.modeling.image_encoder import ImageEncoderViT

from mricore_nnunet.checkpoints import (
    CheckpointError,
    build_encoder_from_checkpoint,
    file_sha256,
    inspect_checkpoint,
    load_encoder_weights,
    read_checkpoint,
    save_encoder_checkpoint,
)
from mricore_nnunet.encoder import EncoderPreset, MRICoreEncoder

EMBED_DIM = 96
DEPTH = 4
NECK_CHANS = 32
RAW = {"scheme": "none"}


def small_preset(use_rel_pos: bool) -> EncoderPreset:
    return EncoderPreset(EMBED_DIM, DEPTH, 3, 4, (1, 3), NECK_CHANS, use_rel_pos=use_rel_pos)


def make_sam_encoder(use_rel_pos: bool, img_size: int = 64, seed: int = 0) -> ImageEncoderViT:
    """Build SAM's image encoder at a small size with every parameter random, pos_embed and rel-pos included."""
    torch.manual_seed(seed)
    sam = ImageEncoderViT(
        img_size=img_size,
        embed_dim=EMBED_DIM,
        depth=DEPTH,
        num_heads=3,
        window_size=4,
        global_attn_indexes=(1, 3),
        out_chans=NECK_CHANS,
        use_rel_pos=use_rel_pos,
        # As segment_anything's build_sam does for the released models.
        norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
    )
    with torch.no_grad():
        for name, param in sam.named_parameters():
            if "pos" in name or "norm" in name:
                param.normal_(0.0, 0.2)
    return sam.eval()


def save_sam_checkpoint(path, sam: ImageEncoderViT, prefix: str = "") -> None:
    state = {f"{prefix}image_encoder.{key}": value for key, value in sam.state_dict().items()}
    state[f"{prefix}prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"] = torch.randn(2, 8)
    state[f"{prefix}mask_decoder.iou_token.weight"] = torch.randn(1, 8)
    torch.save(state, path)


def dinov2_backbone(sam: ImageEncoderViT, chunked: bool, with_neck: bool = False) -> dict[str, torch.Tensor]:
    """Rewrite SAM encoder weights as a DINOv2 backbone: token-list pos_embed, fc MLP names, optional chunks."""
    backbone = {}
    for key, value in sam.state_dict().items():
        if key == "pos_embed":
            grid = value.reshape(1, -1, value.shape[-1])  # 1 x g*g x D
            class_token = torch.randn(1, 1, value.shape[-1])
            backbone["backbone.pos_embed"] = torch.cat([class_token, grid], dim=1)  # 1 x (1 + g*g) x D
            continue
        if key.startswith("neck.") and not with_neck:
            continue
        key = key.replace("mlp.lin1", "mlp.fc1").replace("mlp.lin2", "mlp.fc2")
        if chunked and key.startswith("blocks."):
            index = int(key.split(".")[1])
            # Two chunks of two blocks; the inner index stays the global block index.
            key = f"blocks.{index // 2}.{key[len('blocks.'):]}"
        backbone["backbone." + key] = value
    backbone["backbone.cls_token"] = torch.randn(1, 1, EMBED_DIM)
    backbone["backbone.mask_token"] = torch.randn(1, EMBED_DIM)
    backbone["backbone.norm.weight"] = torch.randn(EMBED_DIM)
    backbone["backbone.norm.bias"] = torch.randn(EMBED_DIM)
    backbone["dino_head.mlp.0.weight"] = torch.randn(16, EMBED_DIM)
    backbone["dino_head.last_layer.weight_g"] = torch.randn(32, 1)
    backbone["ibot_head.mlp.0.weight"] = torch.randn(16, EMBED_DIM)
    return backbone


def new_encoder(use_rel_pos: bool = False, img_size: int = 64, in_chans: int = 3) -> MRICoreEncoder:
    return MRICoreEncoder(small_preset(use_rel_pos), img_size=img_size, in_chans=in_chans, normalization=RAW)


def block_tensors(encoder: MRICoreEncoder) -> dict[str, torch.Tensor]:
    return {key: value for key, value in encoder.state_dict().items() if key.startswith("vit.blocks.")}


# SAM layout and the parity with Segment Anything's own encoder.


@pytest.mark.parametrize("use_rel_pos", [True, False])
def test_sam_parity(tmp_path, use_rel_pos):
    sam = make_sam_encoder(use_rel_pos)
    path = tmp_path / "sam.pth"
    save_sam_checkpoint(path, sam)

    encoder = new_encoder(use_rel_pos).eval()
    report = load_encoder_weights(encoder, path)

    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ours = encoder.vit.forward_features(x)
        reference = sam(x)
    assert ours.shape == reference.shape
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=0)

    assert report.layout == "sam"
    assert not report.resized
    assert not report.initialised
    assert len(report.matched) == len(encoder.state_dict())
    assert ("image_encoder.blocks.0.mlp.lin1.weight", "vit.blocks.0.mlp.fc1.weight") in report.renamed
    reasons = dict(report.ignored)
    assert "prompt encoder" in reasons["prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"]
    assert "mask decoder" in reasons["mask_decoder.iou_token.weight"]


def test_sam_rel_pos_left_out(tmp_path):
    path = tmp_path / "sam.pth"
    save_sam_checkpoint(path, make_sam_encoder(use_rel_pos=True))

    encoder = new_encoder(use_rel_pos=False)
    report = load_encoder_weights(encoder, path)

    reasons = dict(report.ignored)
    assert "left out" in reasons["image_encoder.blocks.1.attn.rel_pos_h"]
    assert "has none" in reasons["image_encoder.blocks.1.attn.rel_pos_h"]
    assert sum("relative-position" in reason for reason in reasons.values()) == 2 * DEPTH
    assert any("relative-position tables" in warning for warning in report.warnings)


def test_sam_global_rel_pos_resized(tmp_path):
    # SAM at 128 px has an 8x8 grid: global tables of 2*8-1 = 15 entries, window tables of 2*4-1 = 7.
    path = tmp_path / "sam128.pth"
    save_sam_checkpoint(path, make_sam_encoder(use_rel_pos=True, img_size=128))

    encoder = new_encoder(use_rel_pos=True, img_size=64)
    report = load_encoder_weights(encoder, path)

    resized = {key: (old, new, method) for key, old, new, method in report.resized}
    for block in (1, 3):
        old, new, method = resized[f"vit.blocks.{block}.attn.rel_pos_h"]
        assert old == (15, 32)
        assert new == (7, 32)
        assert "linear" in method
    for block in (0, 2):
        assert f"vit.blocks.{block}.attn.rel_pos_w" in report.matched
    old, new, method = resized["vit.pos_embed"]
    assert (old, new) == ((1, 8, 8, EMBED_DIM), (1, 4, 4, EMBED_DIM))
    assert "bicubic" in method


def test_pos_embed_resized_larger_grid(tmp_path):
    sam = make_sam_encoder(use_rel_pos=False, img_size=64)
    path = tmp_path / "sam.pth"
    save_sam_checkpoint(path, sam)

    encoder = new_encoder(img_size=128)
    report = load_encoder_weights(encoder, path)

    (key, old, new, method), *others = report.resized
    assert not others
    assert key == "vit.pos_embed"
    assert old == (1, 4, 4, EMBED_DIM)
    assert new == (1, 8, 8, EMBED_DIM)
    assert "4x4 grid to 8x8" in method
    assert encoder.vit.pos_embed.shape == (1, 8, 8, EMBED_DIM)
    assert "pos_embed" in report.format()


def test_ddp_prefix_stripped(tmp_path):
    sam = make_sam_encoder(use_rel_pos=False)
    path = tmp_path / "ddp.pth"
    save_sam_checkpoint(path, sam, prefix="module.")

    loaded = read_checkpoint(path)
    assert loaded.layout == "sam"
    assert any("'module.'" in note for note in loaded.notes)
    assert loaded.source_keys["vit.patch_embed.proj.weight"] == "image_encoder.patch_embed.proj.weight"

    encoder = new_encoder()
    report = load_encoder_weights(encoder, path)
    assert len(report.matched) == len(encoder.state_dict())


def test_two_channel_patch_embedding(tmp_path):
    sam = make_sam_encoder(use_rel_pos=False)
    path = tmp_path / "sam.pth"
    save_sam_checkpoint(path, sam)

    encoder = new_encoder(in_chans=2)
    report = load_encoder_weights(encoder, path)

    resized = {key: (old, new, method) for key, old, new, method in report.resized}
    old, new, method = resized["vit.patch_embed.proj.weight"]
    assert old == (EMBED_DIM, 3, 16, 16)
    assert new == (EMBED_DIM, 2, 16, 16)
    assert "3 to 2 input channels" in method
    expected = sam.patch_embed.proj.weight.detach()[:, :2] * 1.5
    torch.testing.assert_close(encoder.vit.patch_embed.proj.weight.detach(), expected)
    assert "vit.patch_embed.proj.bias" in report.matched


# Official MRI-CORE layout: a DINOv2 teacher around the SAM backbone.


@pytest.mark.parametrize("chunked", [False, True], ids=["flat", "chunked"])
def test_dinov2_teacher_loads_same_blocks(tmp_path, chunked):
    sam = make_sam_encoder(use_rel_pos=False)
    sam_path = tmp_path / "sam.pth"
    save_sam_checkpoint(sam_path, sam)
    reference = new_encoder()
    load_encoder_weights(reference, sam_path)

    dino_path = tmp_path / "mricore.pth"
    torch.save({"teacher": dinov2_backbone(sam, chunked)}, dino_path)
    encoder = new_encoder()
    report = load_encoder_weights(encoder, dino_path)

    assert report.layout == "mricore_dinov2"
    expected_blocks = block_tensors(reference)
    loaded_blocks = block_tensors(encoder)
    assert loaded_blocks.keys() == expected_blocks.keys()
    for key, tensor in expected_blocks.items():
        assert torch.equal(loaded_blocks[key], tensor), key
    assert torch.equal(encoder.vit.pos_embed, reference.vit.pos_embed)
    assert torch.equal(encoder.vit.patch_embed.proj.weight, reference.vit.patch_embed.proj.weight)

    assert any("'teacher'" in note for note in report.notes)
    assert any("class token plus a 4x4 grid" in note for note in report.notes)
    if chunked:
        assert any("BlockChunk" in note for note in report.notes)
        assert ("backbone.blocks.1.3.mlp.fc2.weight", "vit.blocks.3.mlp.fc2.weight") in report.renamed

    reasons = dict(report.ignored)
    assert "self-distillation" in reasons["dino_head.mlp.0.weight"]
    assert "masked-patch" in reasons["ibot_head.mlp.0.weight"]
    assert "mask token" in reasons["backbone.mask_token"]
    assert "class token" in reasons["backbone.cls_token"]
    assert "final norm" in reasons["backbone.norm.weight"]
    assert "class-token entry" in reasons["backbone.pos_embed[:, 0]"]


def test_dinov2_fresh_neck_reported(tmp_path, caplog):
    sam = make_sam_encoder(use_rel_pos=False)
    path = tmp_path / "mricore.pth"
    torch.save({"teacher": dinov2_backbone(sam, chunked=False)}, path)

    encoder = new_encoder()
    with caplog.at_level(logging.WARNING, logger="mricore_nnunet.checkpoints"):
        report = load_encoder_weights(encoder, path)

    initialised = dict(report.initialised)
    neck_keys = [key for key in encoder.state_dict() if key.startswith("vit.neck.")]
    assert sorted(initialised) == sorted(neck_keys)
    assert all("random initialisation" in reason for reason in initialised.values())
    assert any("neck" in warning and "freshly initialised" in warning for warning in report.warnings)
    assert any("neck_checkpoint" in warning for warning in report.warnings)
    assert "freshly initialised" in caplog.text
    assert "Freshly initialised:" in report.format()


def test_dinov2_neck_from_sam_checkpoint(tmp_path):
    sam = make_sam_encoder(use_rel_pos=False)
    sam_path = tmp_path / "sam.pth"
    save_sam_checkpoint(sam_path, sam)
    dino_path = tmp_path / "mricore.pth"
    torch.save({"teacher": dinov2_backbone(sam, chunked=True)}, dino_path)

    encoder = new_encoder().eval()
    report = load_encoder_weights(encoder, dino_path, neck_checkpoint=sam_path)

    neck_keys = [key for key in encoder.state_dict() if key.startswith("vit.neck.")]
    assert not report.initialised
    assert set(neck_keys) <= set(report.matched)
    assert sorted(report.from_neck_checkpoint) == sorted(neck_keys)
    assert ("sam.pth:image_encoder.neck.0.weight", "vit.neck.0.weight") in report.renamed
    assert report.neck_checkpoint == sam_path
    assert report.neck_sha256 == file_sha256(sam_path)
    assert not any("freshly initialised" in warning for warning in report.warnings)

    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(encoder.vit.forward_features(x), sam(x), atol=1e-5, rtol=0)


def test_dinov2_prefers_teacher_over_student(tmp_path):
    teacher = dinov2_backbone(make_sam_encoder(use_rel_pos=False, seed=1), chunked=False)
    student = dinov2_backbone(make_sam_encoder(use_rel_pos=False, seed=2), chunked=False)
    path = tmp_path / "train.pth"
    torch.save({"student": student, "teacher": teacher, "iteration": torch.tensor(10)}, path)

    loaded = read_checkpoint(path)

    assert torch.equal(loaded.state_dict["vit.blocks.0.attn.qkv.weight"], teacher["backbone.blocks.0.attn.qkv.weight"])
    assert any("'teacher'" in note and "student" in note for note in loaded.notes)
    reasons = dict(loaded.ignored)
    assert "'teacher' weights are used" in reasons["student"]
    assert "iteration" in reasons


def test_dinov2_combined_model_state(tmp_path):
    teacher = dinov2_backbone(make_sam_encoder(use_rel_pos=False, seed=1), chunked=False)
    student = dinov2_backbone(make_sam_encoder(use_rel_pos=False, seed=2), chunked=False)
    combined = {f"teacher.{key}": value for key, value in teacher.items()}
    combined |= {f"student.{key}": value for key, value in student.items()}
    path = tmp_path / "model.pth"
    torch.save({"model": combined}, path)

    loaded = read_checkpoint(path)

    assert loaded.layout == "mricore_dinov2"
    assert torch.equal(loaded.state_dict["vit.blocks.2.mlp.fc1.weight"], teacher["backbone.blocks.2.mlp.fc1.weight"])
    assert any("'model'" in note for note in loaded.notes)
    assert "student.backbone.blocks.0.norm1.weight" in [key for key, _ in loaded.ignored]


def test_dinov2_layer_scale_folded(tmp_path):
    backbone = dinov2_backbone(make_sam_encoder(use_rel_pos=False), chunked=False)
    gamma = torch.rand(EMBED_DIM) + 0.5
    backbone["backbone.blocks.0.ls1.gamma"] = gamma
    path = tmp_path / "ls.pth"
    torch.save({"teacher": backbone}, path)

    loaded = read_checkpoint(path)

    expected = backbone["backbone.blocks.0.attn.proj.weight"] * gamma[:, None]
    torch.testing.assert_close(loaded.state_dict["vit.blocks.0.attn.proj.weight"], expected)
    torch.testing.assert_close(loaded.state_dict["vit.blocks.0.attn.proj.bias"], backbone["backbone.blocks.0.attn.proj.bias"] * gamma)
    assert any("Folded layer scale" in note for note in loaded.notes)


# This package's own layout, timm and nnU-Net.


def test_own_checkpoint_round_trip(tmp_path):
    torch.manual_seed(3)
    encoder = MRICoreEncoder("tiny", img_size=64, in_chans=1).eval()
    path = save_encoder_checkpoint(encoder, tmp_path / "sub" / "enc.pth", extra_metadata={"source": "test", "epoch": 7})

    assert [child.name for child in path.parent.iterdir()] == ["enc.pth"]
    loaded = read_checkpoint(path)
    assert loaded.layout == "mricore_nnunet"
    assert loaded.metadata["preset"] == "tiny"
    assert loaded.metadata["source"] == "test"

    rebuilt, report = build_encoder_from_checkpoint(path)
    rebuilt.eval()
    assert rebuilt.preset_name == "tiny"
    assert rebuilt.img_size == 64
    assert len(report.matched) == len(encoder.state_dict())
    assert not report.renamed
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        assert torch.equal(rebuilt(x), encoder(x))


def test_own_checkpoint_custom_architecture(tmp_path):
    encoder = new_encoder(use_rel_pos=True).eval()
    path = save_encoder_checkpoint(encoder, tmp_path / "custom.pth")

    rebuilt, report = build_encoder_from_checkpoint(path, in_chans=3)

    assert rebuilt.preset == encoder.preset
    assert rebuilt.normalization == RAW
    assert any("Custom architecture" in note for note in report.notes)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(rebuilt(x), encoder(x))


def test_save_rejects_unreadable_metadata(tmp_path):
    encoder = MRICoreEncoder("tiny", img_size=64)
    with pytest.raises(ValueError, match="weights_only"):
        save_encoder_checkpoint(encoder, tmp_path / "enc.pth", extra_metadata={"when": object()})
    with pytest.raises(ValueError, match="overwrite"):
        save_encoder_checkpoint(encoder, tmp_path / "enc.pth", extra_metadata={"preset": "other"})
    assert list(tmp_path.iterdir()) == []


def test_bare_state_dict_infers_preset(tmp_path):
    source = MRICoreEncoder("tiny", img_size=64)
    path = tmp_path / "bare.pth"
    torch.save(source.state_dict(), path)

    encoder, report = build_encoder_from_checkpoint(path)

    assert report.layout == "mricore_nnunet"
    assert any("without metadata" in note for note in report.notes)
    assert encoder.preset_name == "tiny"
    assert len(report.matched) == len(source.state_dict())


def test_timm_state_dict_infers_tiny(tmp_path):
    torch.manual_seed(4)
    source = MRICoreEncoder("tiny", img_size=64).eval()
    path = tmp_path / "timm.pth"
    torch.save(source.vit.state_dict(), path)

    encoder, report = build_encoder_from_checkpoint(path)

    assert report.layout == "timm"
    assert encoder.preset_name == "tiny"
    assert encoder.img_size == 64
    assert any("inferred from the tensor shapes" in note for note in report.notes)
    x = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        assert torch.equal(encoder(x), source(x))


def test_nnunet_checkpoint_reuses_encoder(tmp_path):
    torch.manual_seed(5)
    source = MRICoreEncoder("tiny", img_size=64)
    weights = {f"encoder.{key}": value for key, value in source.state_dict().items()}
    weights["decoder.seg_layers.0.weight"] = torch.randn(2, 64, 1, 1)
    path = tmp_path / "checkpoint_final.pth"
    torch.save(
        {
            "network_weights": weights,
            "optimizer_state": {"state": {}, "param_groups": []},
            "trainer_name": "MRICoreTrainer",
            "current_epoch": 12,
            "init_args": {"configuration": "2d", "fold": 0},
        },
        path,
    )

    loaded = read_checkpoint(path)
    assert loaded.layout == "nnunet"
    assert loaded.metadata["trainer_name"] == "MRICoreTrainer"
    assert loaded.metadata["configuration"] == "2d"
    reasons = dict(loaded.ignored)
    assert "outside the encoder" in reasons["network_weights.decoder.seg_layers.0.weight"]
    assert "training state" in reasons["optimizer_state"]

    encoder = MRICoreEncoder("tiny", img_size=64)
    report = load_encoder_weights(encoder, loaded)
    assert len(report.matched) == len(encoder.state_dict())
    for key, tensor in source.state_dict().items():
        assert torch.equal(encoder.state_dict()[key], tensor), key


def test_nnunet_checkpoint_without_encoder(tmp_path):
    path = tmp_path / "plain_unet.pth"
    torch.save({"network_weights": {"encoder.stages.0.conv.weight": torch.zeros(1)}}, path)
    with pytest.raises(CheckpointError) as error:
        read_checkpoint(path)
    message = str(error.value)
    assert str(path) in message
    assert "no key ends in 'vit.patch_embed.proj.weight'" in message
    assert "encoder.stages.0.conv.weight" in message


# Errors.


def test_missing_file(tmp_path):
    path = tmp_path / "absent.pth"
    with pytest.raises(CheckpointError) as error:
        read_checkpoint(path)
    assert "not found" in str(error.value)
    assert str(path) in str(error.value)


def test_random_bytes_rejected(tmp_path):
    path = tmp_path / "random.pth"
    path.write_bytes(bytes(np.random.default_rng(0).integers(1, 127, 4096, dtype=np.uint8)))
    with pytest.raises(CheckpointError) as error:
        read_checkpoint(path)
    assert "is not a PyTorch checkpoint" in str(error.value)
    assert str(path) in str(error.value)


def test_truncated_zip_corrupt(tmp_path):
    good = tmp_path / "good.pth"
    torch.save({"x": torch.zeros(1000)}, good)
    path = tmp_path / "truncated.pth"
    path.write_bytes(good.read_bytes()[:600])
    with pytest.raises(CheckpointError) as error:
        read_checkpoint(path)
    assert "corrupt or truncated" in str(error.value)


class PickledTrainer:
    """A class instance that torch.load(weights_only=True) must not unpickle."""


def test_pickled_objects_rejected(tmp_path):
    path = tmp_path / "model_final_checkpoint.model"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "plot_stuff": ([np.float64(0.5)],), "trainer": PickledTrainer()}, path)
    with pytest.raises(CheckpointError) as error:
        read_checkpoint(path)
    message = str(error.value)
    assert str(path) in message
    assert "pickled Python objects" in message
    assert "for safety" in message
    assert "nnU-Net v1 '.model' file is not an encoder checkpoint" in message


def test_plain_pickle_rejected(tmp_path):
    path = tmp_path / "model_final_checkpoint.model.pkl"
    with open(path, "wb") as file:
        pickle.dump({"name": "nnUNetTrainerV2", "plans": {"a": [1, 2]}}, file)
    with pytest.raises(CheckpointError) as error:
        read_checkpoint(path)
    message = str(error.value)
    assert "plain Python pickle" in message
    assert "pickled Python objects" in message
    assert "nnU-Net v1" in message


def test_nnunet_v1_structure_rejected(tmp_path):
    path = tmp_path / "v1.model"
    torch.save({"epoch": 1, "state_dict": {"w": torch.zeros(1)}, "optimizer_state_dict": {}}, path)
    with pytest.raises(CheckpointError, match="nnU-Net v1 training checkpoint"):
        read_checkpoint(path)


def test_unknown_layout(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"features.0.weight": torch.zeros(3), "classifier.weight": torch.zeros(2)}, path)
    with pytest.raises(CheckpointError) as error:
        read_checkpoint(path)
    message = str(error.value)
    assert "unknown checkpoint layout" in message
    for layout in ("mricore_dinov2", "sam", "mricore_nnunet", "timm", "nnunet"):
        assert layout in message
    assert "'features.0.weight'" in message


def test_width_depth_mismatch(tmp_path):
    path = tmp_path / "tiny.pth"
    torch.save(MRICoreEncoder("tiny", img_size=64).vit.state_dict(), path)

    encoder = MRICoreEncoder(EncoderPreset(64, 2, 2, 4, (1,), 32), img_size=64)
    with pytest.raises(CheckpointError) as error:
        load_encoder_weights(encoder, path)
    message = str(error.value)
    assert str(path) in message
    assert "embed dim 96 and depth 4" in message
    assert "expects embed dim 64 and depth 2" in message
    assert "'tiny'" in message


def test_no_fitting_preset_lists_presets(tmp_path):
    path = tmp_path / "sam.pth"
    save_sam_checkpoint(path, make_sam_encoder(use_rel_pos=False))
    with pytest.raises(CheckpointError) as error:
        build_encoder_from_checkpoint(path)
    message = str(error.value)
    assert "no preset fits" in message
    assert "embed_dim 96" in message
    for name in ("vit_b", "sam_vit_b", "small", "tiny"):
        assert name in message


def test_neck_width_mismatch(tmp_path):
    path = tmp_path / "sam.pth"
    save_sam_checkpoint(path, make_sam_encoder(use_rel_pos=False))
    encoder = MRICoreEncoder(EncoderPreset(EMBED_DIM, DEPTH, 3, 4, (1, 3), 16), img_size=64)
    with pytest.raises(CheckpointError) as error:
        load_encoder_weights(encoder, path)
    message = str(error.value)
    assert "image_encoder.neck.0.weight" in message
    assert "neck has 32 output channels, the preset's 16" in message


def test_incomplete_blocks_rejected(tmp_path):
    sam = make_sam_encoder(use_rel_pos=False)
    state = {f"image_encoder.{key}": value for key, value in sam.state_dict().items() if "mlp.lin2" not in key}
    path = tmp_path / "partial.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError) as error:
        load_encoder_weights(new_encoder(), path)
    assert "lacks 8 tensors" in str(error.value)
    assert "vit.blocks.0.mlp.fc2.weight" in str(error.value)


def test_own_checkpoint_newer_version(tmp_path):
    path = tmp_path / "future.pth"
    torch.save({"format": "mricore_nnunet.encoder", "version": 2, "metadata": {}, "state_dict": {}}, path)
    with pytest.raises(CheckpointError, match="version 2"):
        read_checkpoint(path)


# Report text and inspection.


def test_report_format_and_summary(tmp_path):
    sam = make_sam_encoder(use_rel_pos=False)
    path = tmp_path / "mricore.pth"
    torch.save({"teacher": dinov2_backbone(sam, chunked=False)}, path)

    encoder = new_encoder(img_size=128)
    report = load_encoder_weights(encoder, path)

    accounted = report.matched + [key for key, *_ in report.resized] + [key for key, _ in report.initialised]
    assert sorted(accounted) == sorted(encoder.state_dict())
    assert len(set(accounted)) == len(accounted)

    summary = report.summary()
    assert "\n" not in summary
    assert "mricore.pth" in summary
    assert f"{len(report.initialised)} freshly initialised" in summary
    text = report.format()
    for section in ("layout: mricore_dinov2", "Conversion:", "Matched:", "Resized:", "Freshly initialised:", "Ignored file entries:", "Warnings:"):
        assert section in text
    assert report.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_inspect_own_checkpoint(tmp_path):
    path = save_encoder_checkpoint(MRICoreEncoder("tiny", img_size=64), tmp_path / "enc.pth")

    text = inspect_checkpoint(path)

    assert "Layout: mricore_nnunet" in text
    assert "preset: \"tiny\"" in text
    for part in ("patch embedding:", "position embedding:", "blocks:", "neck:", "total:"):
        assert part in text
    assert "Load report against preset 'tiny' at img_size 64" in text
    assert file_sha256(path) in text


def test_two_channel_checkpoint_grey_encoder(tmp_path):
    source = MRICoreEncoder("tiny", img_size=64, in_chans=2)
    path = save_encoder_checkpoint(source, tmp_path / "two.pth")

    encoder, report = build_encoder_from_checkpoint(path, in_chans=1)

    resized = {key: (old, new, method) for key, old, new, method in report.resized}
    old, new, method = resized["vit.patch_embed.proj.weight"]
    assert (old[1], new[1]) == (2, 3)
    assert "summing the kernels" in method
    expected = source.vit.patch_embed.proj.weight.detach().sum(dim=1, keepdim=True).repeat(1, 3, 1, 1) / 3
    torch.testing.assert_close(encoder.vit.patch_embed.proj.weight.detach(), expected)
