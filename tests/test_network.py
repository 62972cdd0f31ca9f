"""The encoder's input path, the segmentation network and the fine-tuning modes."""

from __future__ import annotations

import pytest
import torch

from mricore_nnunet.encoder import MRICoreEncoder, default_feature_indices
from mricore_nnunet.finetune import load_plain_encoder_state
from mricore_nnunet.network import MRICoreSegmentationNetwork

SMALL_DECODER = (8, 8, 16, 16)


def make_network(mode: str = "full", deep_supervision: bool = False, channels: int = 1) -> MRICoreSegmentationNetwork:
    torch.manual_seed(0)
    return MRICoreSegmentationNetwork(
        channels, 3, deep_supervision, preset="tiny", img_size=64, decoder_channels=SMALL_DECODER, finetune=mode
    )


@pytest.mark.parametrize("height,width", [(64, 64), (48, 80), (128, 32)])
def test_encoder_accepts_multiples_of_16(height, width):
    encoder = MRICoreEncoder("tiny", 64, 1).eval()
    features = encoder(torch.randn(2, 1, height, width))
    assert features.shape == (2, 64, height // 16, width // 16)


def test_encoder_rejects_other_sizes():
    encoder = MRICoreEncoder("tiny", 64, 1)
    with pytest.raises(ValueError, match="multiples of 16"):
        encoder(torch.randn(1, 1, 64, 70))


def test_encoder_rejects_wrong_channel_count():
    encoder = MRICoreEncoder("tiny", 64, 2)
    with pytest.raises(ValueError, match="Expected 2 input channels"):
        encoder(torch.randn(1, 1, 64, 64))


@pytest.mark.parametrize("channels,patch_channels", [(1, 3), (2, 2), (3, 3), (4, 4)])
def test_encoder_patch_embedding_channels(channels, patch_channels):
    encoder = MRICoreEncoder("tiny", 64, channels).eval()
    assert encoder.vit.patch_embed.proj.in_channels == patch_channels
    assert encoder(torch.randn(1, channels, 64, 64)).shape == (1, 64, 4, 4)


def test_input_normalization_ignores_affine_intensity_changes():
    """nnU-Net's z-score before the model cannot change the encoder's input."""
    encoder = MRICoreEncoder("tiny", 64, 1).eval()
    image = torch.rand(2, 1, 64, 64) * 900 + 100
    with torch.no_grad():
        raw = encoder(image)
        rescaled = encoder((image - image.mean()) / image.std() * 3.0 + 7.0)
    assert torch.allclose(raw, rescaled, atol=1e-4)


def test_input_normalization_matches_imagenet_statistics():
    encoder = MRICoreEncoder("tiny", 64, 1)
    image = torch.zeros(1, 1, 64, 64)
    image[..., 0, 0] = 5.0
    normalized = encoder.input_norm(image)
    # Minimum maps to (0 - mean) / std per channel, maximum to (1 - mean) / std.
    assert normalized.shape == (1, 3, 64, 64)
    assert torch.allclose(normalized[0, :, 1, 1], torch.tensor([-0.485 / 0.229, -0.456 / 0.224, -0.406 / 0.225]))
    assert torch.allclose(normalized[0, :, 0, 0], torch.tensor([0.515 / 0.229, 0.544 / 0.224, 0.594 / 0.225]))


def test_constant_slice_gives_finite_input():
    encoder = MRICoreEncoder("tiny", 64, 1)
    assert torch.isfinite(encoder.input_norm(torch.full((1, 1, 64, 64), 3.0))).all()


def test_default_feature_indices():
    assert default_feature_indices(12) == (2, 5, 8, 11)
    assert default_feature_indices(4) == (0, 1, 2, 3)


def test_network_returns_full_resolution_logits():
    network = make_network().eval()
    logits = network(torch.randn(2, 1, 64, 96))
    assert logits.shape == (2, 3, 64, 96)


def test_network_deep_supervision_outputs():
    network = make_network(deep_supervision=True).eval()
    outputs = network(torch.randn(1, 1, 64, 64))
    assert [tuple(o.shape[2:]) for o in outputs] == [(64, 64), (32, 32), (16, 16), (8, 8)]

    network.decoder.deep_supervision = False
    assert network(torch.randn(1, 1, 64, 64)).shape == (1, 3, 64, 64)


def test_network_rejects_unknown_strides():
    with pytest.raises(ValueError, match="strides"):
        MRICoreSegmentationNetwork(1, 2, preset="tiny", img_size=64, strides=[[1, 1], [2, 2]])


def test_network_rejects_unknown_finetune_mode():
    with pytest.raises(ValueError, match="fine-tuning mode"):
        make_network("partial")


@pytest.mark.parametrize("mode", ["frozen", "adapter", "lora"])
def test_finetune_modes_start_from_the_plain_network(mode):
    """Adapters and LoRA are zero-initialised, so the adapted network computes what the plain one does."""
    plain = make_network("full").eval()
    adapted = make_network(mode).eval()
    load_plain_encoder_state(adapted.encoder, plain.encoder.state_dict())
    adapted.decoder.load_state_dict(plain.decoder.state_dict())

    image = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        assert torch.allclose(plain(image), adapted(image), atol=1e-5)


def test_finetune_modes_train_the_right_parameters():
    def trainable(network):
        return {name for name, p in network.encoder.named_parameters() if p.requires_grad}

    assert trainable(make_network("full")) == {name for name, _ in make_network("full").encoder.named_parameters()}
    assert trainable(make_network("frozen")) == set()

    adapter = trainable(make_network("adapter"))
    assert adapter and all(".adapter." in n or n.startswith("vit.neck.") for n in adapter)
    assert {n.split(".")[2] for n in adapter if ".adapter." in n} == {"0", "1", "2", "3"}

    lora = trainable(make_network("lora"))
    assert lora and all(".lora_" in n or n.startswith("vit.neck.") for n in lora)


def test_frozen_encoder_gets_no_gradient():
    network = make_network("frozen")
    network(torch.randn(1, 1, 64, 64)).sum().backward()
    assert all(p.grad is None for p in network.encoder.parameters())
    assert any(p.grad is not None for p in network.decoder.parameters())


def test_plain_state_must_cover_the_encoder():
    network = make_network("adapter")
    state = MRICoreEncoder("tiny", 64, 1).state_dict()
    del state["vit.blocks.0.norm1.weight"]
    with pytest.raises(ValueError, match="missing"):
        load_plain_encoder_state(network.encoder, state)


def test_gradient_checkpointing_gives_same_gradients():
    torch.manual_seed(0)
    plain = make_network().train()
    checkpointed = MRICoreSegmentationNetwork(
        1, 3, preset="tiny", img_size=64, decoder_channels=SMALL_DECODER, gradient_checkpointing=True
    ).train()
    checkpointed.load_state_dict(plain.state_dict())
    image = torch.randn(2, 1, 64, 64)

    plain(image).square().mean().backward()
    checkpointed(image).square().mean().backward()
    assert checkpointed.encoder.vit.grad_checkpointing
    for (name, a), (_, b) in zip(plain.named_parameters(), checkpointed.named_parameters()):
        # The coarser segmentation heads only get gradients with deep supervision.
        assert (a.grad is None) == (b.grad is None), name
        if a.grad is not None:
            assert torch.allclose(a.grad, b.grad, atol=1e-5), name
