"""Siamese change detection: shared encoder on both dates, |difference| fusion, UNet decoder.

    model = SiameseChangeDetector(enc, decoder_channels=(512, 256, 128, 64))
    logits = model(before, after)     # (B, 3, H, W) x 2 -> (B, 2, H, W); class 1 = change

As RoMA's OSCD config (open-cd SiamEncoderDecoder + FeatureFusionNeck("abs_diff") + UNetHead):
both images go through the same encoder in one batch, the simple pyramid gives strides 4/8/16/32
per date, each level is fused as |f_before - f_after|, and a UNet decoder climbs from stride 32 to
stride 4 with skip connections; logits are upsampled bilinearly to the input size. Identical dates
give all-zero fused features, so the prediction then depends on the decoder's biases only.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from roma.eval.dense.layers import ConvBNReLU, encoder_grid, resize
from roma.eval.dense.pyramid import SimplePyramid


class UNetDecoder(nn.Module):
    """[s4, s8, s16, s32] maps of in_dim channels -> (B, num_classes, H/4, W/4) logits."""

    def __init__(self, in_dim: int, channels: tuple[int, ...] = (512, 256, 128, 64), num_classes: int = 2):
        super().__init__()
        if len(channels) != 4:
            raise ValueError(f"decoder_channels needs 4 values (one per block), got {channels}")
        c = list(channels)
        self.center = nn.Sequential(ConvBNReLU(in_dim, c[0]), ConvBNReLU(c[0], c[0]))  # at stride 32
        self.ups = nn.ModuleList(nn.Sequential(ConvBNReLU(c[i - 1] + in_dim, c[i]), ConvBNReLU(c[i], c[i]))
                                 for i in range(1, 4))
        self.cls = nn.Conv2d(c[3], num_classes, 1)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        s4, s8, s16, s32 = feats
        x = self.center(s32)
        for up, skip in zip(self.ups, (s16, s8, s4)):
            x = up(torch.cat([resize(x, skip.shape[-2:]), skip], 1))
        return self.cls(x)


class SiameseChangeDetector(nn.Module):
    def __init__(self, encoder: nn.Module, decoder_channels: tuple[int, ...] = (512, 256, 128, 64),
                 num_classes: int = 2, pyramid_norm: bool = False):
        super().__init__()
        self.encoder = encoder
        self.num_classes = num_classes
        self.pyramid = SimplePyramid(encoder.embed_dim, encoder.patch_size, norm=pyramid_norm)
        self.decoder = UNetDecoder(encoder.embed_dim, decoder_channels, num_classes)

    def forward(self, before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
        if before.shape != after.shape:
            raise ValueError(f"before {tuple(before.shape)} and after {tuple(after.shape)} differ in shape")
        size = before.shape[-2:]
        grid = encoder_grid(self.encoder, torch.cat([before, after]))  # one pass, shared weights
        fused = [(f_b - f_a).abs() for f_b, f_a in (f.chunk(2) for f in self.pyramid(grid))]
        return F.interpolate(self.decoder(fused), size=size, mode="bilinear", align_corners=False)

    def loss(self, before, after, target) -> torch.Tensor:
        return F.cross_entropy(self(before, after).float(), target, ignore_index=255)
