"""Small building blocks shared by the dense heads, and the resize-to-encoder wrapper."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class ConvBNReLU(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, k: int = 3):
        super().__init__(nn.Conv2d(c_in, c_out, k, padding=k // 2, bias=False), nn.BatchNorm2d(c_out),
                         nn.ReLU(inplace=True))


def resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of a (B, C, H, W) map; a no-op when the size already matches."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def encoder_grid(encoder: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) -> (B, d, gh, gw). The RoMA encoder has a fixed position table, so an input
    of another size is resized to encoder.img_size first (how RoMA feeds 96 px OSCD crops at 768)."""
    size = getattr(encoder, "img_size", None)
    if size is not None:
        x = resize(x, (size, size))
    return encoder.forward_grid(x)
