"""Semantic segmentation: simple pyramid + UperNet head + auxiliary FCN head (RoMA's SpaceNet config).

    model = Segmenter(enc, channels=512, num_classes=2)
    logits = model(x)                  # (B, 3, H, W) -> (B, 2, H, W)
    loss = model.loss(x, target)       # CE(main) + 0.4 * CE(aux on the stride-16 level)

UperNet (mmseg UPerHead): a pyramid pooling module (bins 1, 2, 3, 6) on the stride-32 level, 1x1
laterals on the other levels, a top-down path that adds each coarser level into the finer one,
3x3 convs, then all four levels upsampled to stride 4, concatenated, fused by a 3x3 conv and
classified. The FCN auxiliary head only adds to the training loss.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from roma.eval.dense.layers import ConvBNReLU, encoder_grid, resize
from roma.eval.dense.pyramid import SimplePyramid

AUX_WEIGHT = 0.4


class PPM(nn.Module):
    """Pyramid pooling: (B, c_in, h, w) -> (B, ch, h, w) from the map plus its pooled summaries."""

    def __init__(self, c_in: int, ch: int, scales: tuple[int, ...] = (1, 2, 3, 6)):
        super().__init__()
        self.stages = nn.ModuleList(nn.Sequential(nn.AdaptiveAvgPool2d(s), ConvBNReLU(c_in, ch, 1)) for s in scales)
        self.bottleneck = ConvBNReLU(c_in + len(scales) * ch, ch)

    def forward(self, x):
        return self.bottleneck(torch.cat([x] + [resize(stage(x), x.shape[-2:]) for stage in self.stages], 1))


class UperHead(nn.Module):
    def __init__(self, c_in: int, ch: int = 512, num_classes: int = 2, pool_scales=(1, 2, 3, 6), n_levels: int = 4):
        super().__init__()
        self.ppm = PPM(c_in, ch, pool_scales)
        self.laterals = nn.ModuleList(ConvBNReLU(c_in, ch, 1) for _ in range(n_levels - 1))
        self.fpn_convs = nn.ModuleList(ConvBNReLU(ch, ch) for _ in range(n_levels - 1))
        self.fuse = ConvBNReLU(n_levels * ch, ch)
        self.drop = nn.Dropout2d(0.1)
        self.cls = nn.Conv2d(ch, num_classes, 1)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        """[s4, s8, s16, s32] -> (B, num_classes, H/4, W/4)."""
        lat = [conv(f) for conv, f in zip(self.laterals, feats[:-1])] + [self.ppm(feats[-1])]
        for i in range(len(lat) - 1, 0, -1):  # top-down: coarse context into finer levels
            lat[i - 1] = lat[i - 1] + resize(lat[i], lat[i - 1].shape[-2:])
        outs = [conv(x) for conv, x in zip(self.fpn_convs, lat[:-1])] + [lat[-1]]
        size = outs[0].shape[-2:]
        return self.cls(self.drop(self.fuse(torch.cat([resize(o, size) for o in outs], 1))))


class FCNHead(nn.Module):
    def __init__(self, c_in: int, ch: int = 256, num_classes: int = 2):
        super().__init__()
        self.net = nn.Sequential(ConvBNReLU(c_in, ch), nn.Dropout2d(0.1), nn.Conv2d(ch, num_classes, 1))

    def forward(self, x):
        return self.net(x)


class Segmenter(nn.Module):
    def __init__(self, encoder: nn.Module, channels: int = 512, num_classes: int = 2, aux_channels: int = 256,
                 aux_level: int = 2, pool_scales=(1, 2, 3, 6)):
        super().__init__()
        self.encoder, self.num_classes, self.aux_level = encoder, num_classes, aux_level
        self.pyramid = SimplePyramid(encoder.embed_dim, encoder.patch_size, norm=True)
        self.head = UperHead(encoder.embed_dim, channels, num_classes, pool_scales)
        self.aux_head = FCNHead(encoder.embed_dim, aux_channels, num_classes)

    def forward_both(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, H, W) -> main and auxiliary logits, both (B, num_classes, H, W)."""
        feats = self.pyramid(encoder_grid(self.encoder, x))
        size = x.shape[-2:]
        up = lambda t: F.interpolate(t, size=size, mode="bilinear", align_corners=False)  # noqa: E731
        return up(self.head(feats)), up(self.aux_head(feats[self.aux_level]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(self.head(self.pyramid(encoder_grid(self.encoder, x))), size=x.shape[-2:],
                             mode="bilinear", align_corners=False)

    def loss(self, x, target) -> torch.Tensor:
        main, aux = self.forward_both(x)
        ce = lambda t: F.cross_entropy(t.float(), target, ignore_index=255)  # noqa: E731
        return ce(main) + AUX_WEIGHT * ce(aux)
