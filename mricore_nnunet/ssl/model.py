"""The network trained by self-distillation: the MRI-CORE encoder's ViT blocks, a mask token and projection heads.

The SAM ViT has no class token, so the image-level feature (the "class token" of DINO and
DINOv2) is the mean of the last block's patch tokens. The convolutional neck is not on this
path, so pre-training leaves it as initialised: SAM's neck when starting from SAM, random
otherwise. MRI-CORE's own release has no neck either.
"""

from __future__ import annotations

import torch
from torch import nn
from timm.layers import resample_abs_pos_embed_nhwc

from ..encoder import MRICoreEncoder
from .heads import DINOHead


class SelfDistillationNetwork(nn.Module):
    """Encoder, mask token, feature norm and heads; the student and the teacher are two copies of it.

    `feature_norm` replaces the final norm of DINOv2's ViT, which the SAM ViT lacks before its
    neck. It and the heads belong to pre-training only and are not exported.
    """

    def __init__(self, encoder: MRICoreEncoder, num_prototypes: int, hidden_dim: int, bottleneck_dim: int,
                 separate_ibot_head: bool = True):
        super().__init__()
        self.encoder = encoder
        dim = encoder.embed_dim
        self.mask_token = nn.Parameter(torch.zeros(1, 1, 1, dim))
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        self.feature_norm = nn.LayerNorm(dim, eps=1e-6)
        self.dino_head = DINOHead(dim, num_prototypes, hidden_dim, bottleneck_dim)
        self.ibot_head = DINOHead(dim, num_prototypes, hidden_dim, bottleneck_dim) if separate_ibot_head else None
        for parameter in encoder.vit.neck.parameters():
            parameter.requires_grad_(False)

    def patch_tokens(self, images: torch.Tensor, masks: torch.Tensor | None = None) -> torch.Tensor:
        """Return normalised patch tokens B x H/16 x W/16 x D of raw images B x C x H x W.

        Where `masks` (B x H/16 x W/16, bool) is True, the patch embedding is replaced by the
        learnable mask token before the position embedding is added, as in iBOT.
        """
        vit = self.encoder.vit
        self.encoder.check_input(images)
        x = vit.patch_embed(self.encoder.input_norm(images))  # B x h x w x D
        if masks is not None:
            x = torch.where(masks.unsqueeze(-1), self.mask_token.to(x.dtype), x)
        x = x + resample_abs_pos_embed_nhwc(vit.pos_embed, x.shape[1:3])
        x = vit.norm_pre(vit.patch_drop(vit.pos_drop(x)))
        x = vit.blocks(x)  # B x h x w x D
        return self.feature_norm(x)

    def pooled_features(self, images: torch.Tensor) -> torch.Tensor:
        """Return image features B x D (mean-pooled patch tokens) of raw images B x C x H x W."""
        return self.patch_tokens(images).mean(dim=(1, 2))

    def forward(
        self,
        global_crops: torch.Tensor,
        local_crops: torch.Tensor | None,
        masks: torch.Tensor | None,
        apply_mask_token: bool,
    ) -> dict[str, torch.Tensor]:
        """Run all crops through the network and both heads.

        Shapes: global_crops G x C x H x W (the global crops of the batch, crop-major), local_crops
        L x C x h x w or None, masks G x H/16 x W/16 bool (the patches scored by the iBOT head).
        With `apply_mask_token` (student) the masked patches are hidden from the encoder. Without
        it (teacher) the encoder reads them. Everything runs inside one forward call because
        DistributedDataParallel must see every parameter used there.
        """
        tokens = self.patch_tokens(global_crops, masks if apply_mask_token else None)  # G x h x w x D
        global_features = tokens.mean(dim=(1, 2))  # G x D
        outputs = {"global_features": global_features, "global_logits": self.dino_head(global_features)}

        if local_crops is not None and local_crops.shape[0] > 0:
            outputs["local_logits"] = self.dino_head(self.pooled_features(local_crops))  # L x K

        patch_head = self.ibot_head if self.ibot_head is not None else self.dino_head
        if masks is not None and bool(masks.any()):
            outputs["patch_logits"] = patch_head(tokens[masks])  # M x K, M = masked patches
        else:
            # No masked patch in this batch: an empty result that still connects the head to the
            # graph, so its gradients are zeros rather than missing.
            outputs["patch_logits"] = patch_head(tokens.reshape(-1, tokens.shape[-1])[:1])[:0]
        return outputs
