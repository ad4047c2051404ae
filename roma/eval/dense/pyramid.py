"""ViTDet-style simple feature pyramid: one plain-encoder feature map -> strides 4, 8, 16, 32.

    pyr = SimplePyramid(dim=768, patch_size=16)
    feats = pyr(grid)        # grid (B, d, H/16, W/16) -> [(B, d, H/4, W/4), (B, d, H/8, W/8),
                             #                           (B, d, H/16, W/16), (B, d, H/32, W/32)]

Each level rescales the patch grid by patch_size / stride: x2 steps are ConvT(2, 2), with LN2d +
GELU between two of them (RoMA's fpn1 = ConvT -> LN2d -> GELU -> ConvT for x4), /2 steps are
MaxPool(2), and scale 1 is the identity. For patch 16 this is exactly RoMA's fpn1..fpn4; for the
micro models (patch 8) the same absolute strides come out of x2, x1, /2, /4. RoMA's change-detection
config has no LN2d in the x4 branch: `norm=False` reproduces that.
MaxPool uses ceil_mode so an odd grid still gives a level (decoders resize to their skip's size).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

STRIDES = (4, 8, 16, 32)


class LayerNorm2d(nn.Module):
    """LayerNorm over the channels of a (B, C, H, W) map."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=eps)

    def forward(self, x):
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def _level(dim: int, scale: float, norm: bool) -> nn.Module:
    """A module that resizes a (B, dim, h, w) map by `scale` (a power of two)."""
    steps = int(round(math.log2(scale)))
    if steps == 0:
        return nn.Identity()
    if steps < 0:
        return nn.Sequential(*[nn.MaxPool2d(2, ceil_mode=True) for _ in range(-steps)])
    mods: list[nn.Module] = []
    for i in range(steps):
        if i > 0:  # between two up-convolutions
            mods += [LayerNorm2d(dim), nn.GELU()] if norm else [nn.GELU()]
        mods.append(nn.ConvTranspose2d(dim, dim, 2, stride=2))
    return nn.Sequential(*mods)


class SimplePyramid(nn.Module):
    def __init__(self, dim: int, patch_size: int = 16, strides: tuple[int, ...] = STRIDES, norm: bool = True):
        super().__init__()
        for s in strides:
            scale = patch_size / s
            if scale <= 0 or 2 ** round(math.log2(scale)) != scale:
                raise ValueError(f"stride {s} is not a power-of-two rescaling of patch size {patch_size}")
        self.dim, self.patch_size, self.strides = dim, patch_size, tuple(strides)
        self.levels = nn.ModuleList(_level(dim, patch_size / s, norm) for s in strides)

    def forward(self, grid: torch.Tensor) -> list[torch.Tensor]:
        if grid.dim() != 4 or grid.shape[1] != self.dim:
            raise ValueError(f"pyramid expects (B, {self.dim}, gh, gw), got {tuple(grid.shape)}")
        return [level(grid) for level in self.levels]
