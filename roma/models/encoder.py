"""The RoMA encoder: patch embedding, fixed 2-D sin-cos positions, pre-norm Mamba + SwiGLU blocks.

Pretraining reads tokens in *cluster* order (c x c patch clusters, row-major over the cluster grid
and inside each cluster) and returns LayerNorm'd taps at evenly spaced depths for the decoder.
Downstream reads the raster order, with one scan direction or four (v3).
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from roma.models.mamba import Mamba


# ----------------------------------------------------------------------------- positions and orders
def sincos_pos_embed_2d(dim: int, gh: int, gw: int) -> torch.Tensor:
    """MAE-style fixed 2-D sin-cos table, (gh * gw, dim), raster order; half the channels per axis."""
    if dim % 4:
        raise ValueError(f"sin-cos position embedding needs dim divisible by 4, got {dim}")
    omega = 1.0 / 10000 ** (np.arange(dim // 4, dtype=np.float64) / (dim / 4.0))

    def axis(pos):  # (M,) -> (M, dim/2)
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    ys, xs = np.meshgrid(np.arange(gh, dtype=np.float64), np.arange(gw, dtype=np.float64), indexing="ij")
    emb = np.concatenate([axis(xs), axis(ys)], axis=1)  # w first, as MAE's get_2d_sincos_pos_embed
    return torch.from_numpy(emb).float()


def cluster_order(gh: int, gw: int, c: int) -> torch.Tensor:
    """Raster index of each token in cluster order: clusters row-major, patches row-major inside."""
    if gh % c or gw % c:
        raise ValueError(f"patch grid {gh}x{gw} is not divisible by cluster size {c}")
    idx = torch.arange(gh * gw).view(gh // c, c, gw // c, c)  # (cy, py, cx, px)
    return idx.permute(0, 2, 1, 3).reshape(-1)


def column_major_perm(gh: int, gw: int, cls_index: int | None = None) -> torch.Tensor:
    """Token order of a column-major scan over a raster sequence (a cls token keeps its index)."""
    perm = torch.arange(gh * gw).view(gh, gw).t().reshape(-1)
    if cls_index is None:
        return perm
    perm = torch.where(perm >= cls_index, perm + 1, perm)
    return torch.cat([perm[:cls_index], torch.tensor([cls_index]), perm[cls_index:]])


def tap_layers(depth: int, n_taps: int = 4) -> list[int]:
    """Evenly spaced taps over the second half of the network: 12 -> 6, 8, 10, 12; 24 -> 12..24."""
    if n_taps == 1:
        return [depth]
    return [round(depth / 2 + i * depth / (2 * (n_taps - 1))) for i in range(n_taps)]


# ----------------------------------------------------------------------------- blocks
class SwiGLU(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.w1, self.w2, self.w3 = nn.Linear(dim, hidden), nn.Linear(dim, hidden), nn.Linear(hidden, dim)

    def forward(self, x):
        return self.w3(F.silu(self.w1(x)) * self.w2(x))


class Block(nn.Module):
    """h = h + Mamba(LN(h)); h = h + SwiGLU(LN(h))."""

    def __init__(self, dim: int, d_state: int = 16, directions: int = 1):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-5)
        self.mixer = Mamba(dim, d_state=d_state, expand=1, directions=directions)
        self.norm2 = nn.LayerNorm(dim, eps=1e-5)
        self.mlp = SwiGLU(dim, int(dim * 4 * 2 / 3))

    def forward(self, h, col_perm=None):
        h = h + self.mixer(self.norm1(h), col_perm)
        return h + self.mlp(self.norm2(h))


class AngleEmbedding(nn.Module):
    """Learnable vector(s) added to exactly the tokens of the ARES-rotated region.

    mode "shared": one vector for every angle (as released); "binned": one per angle bin, bins
    spread uniformly over [-max_angle, max_angle], or one per angle of a discrete set.
    """

    def __init__(self, dim: int, mode: str = "shared", bins: int = 8, max_angle: float = 45.0,
                 angles: tuple[float, ...] = ()):
        super().__init__()
        if mode not in ("shared", "binned"):
            raise ValueError(f"angle embedding mode must be 'shared' or 'binned', got {mode!r}")
        self.mode, self.max_angle = mode, max_angle
        n = 1 if mode == "shared" else (len(angles) or bins)
        self.weight = nn.Parameter(torch.zeros(n, dim))
        nn.init.trunc_normal_(self.weight, std=0.02)
        self.register_buffer("angles", torch.tensor(angles, dtype=torch.float32), persistent=False)

    def bin(self, angle: torch.Tensor) -> torch.Tensor:
        """(B,) degrees -> (B,) long bin index."""
        if self.mode == "shared":
            return torch.zeros_like(angle, dtype=torch.long)
        if self.angles.numel():
            return (angle[:, None] - self.angles[None]).abs().argmin(1)
        n = self.weight.shape[0]
        frac = (angle + self.max_angle) / (2 * self.max_angle)
        return (frac * n).floor().long().clamp(0, n - 1)

    def forward(self, x, region, angle, gh: int, gw: int):
        """x: (B, gh*gw, d) raster; region: (B, 3) long (top, left, size; size 0 = none); angle: (B,)."""
        rows = torch.arange(gh, device=x.device)[None, :, None]
        cols = torch.arange(gw, device=x.device)[None, None, :]
        top, left, size = (region[:, i, None, None] for i in range(3))
        mask = (rows >= top) & (rows < top + size) & (cols >= left) & (cols < left + size)  # (B, gh, gw)
        vec = self.weight[self.bin(angle.float())]  # (B, d)
        return x + mask.flatten(1).unsqueeze(-1).to(x.dtype) * vec[:, None, :].to(x.dtype)


# ----------------------------------------------------------------------------- encoder
class RoMAEncoder(nn.Module):
    def __init__(self, embed_dim: int, depth: int, img_size: int = 192, patch_size: int = 16,
                 cluster_size: int = 4, in_chans: int = 3, d_state: int = 16, directions: int = 1,
                 n_taps: int = 4, angle_embed: str | None = None, angle_bins: int = 8,
                 max_angle: float = 45.0, angles: tuple[float, ...] = ()):
        super().__init__()
        if img_size % patch_size:
            raise ValueError(f"img_size {img_size} is not divisible by patch_size {patch_size}")
        self.embed_dim, self.depth = embed_dim, depth
        self.img_size, self.patch_size, self.cluster_size = img_size, patch_size, cluster_size
        self.grid = (img_size // patch_size, img_size // patch_size)
        self.patch_embed = nn.Conv2d(in_chans, embed_dim, patch_size, stride=patch_size)
        # persistent: a checkpoint carries the table it was trained with (downstream resizes it)
        self.register_buffer("pos_embed", sincos_pos_embed_2d(embed_dim, *self.grid)[None])
        self.angle_embed = (AngleEmbedding(embed_dim, angle_embed, angle_bins, max_angle, angles)
                            if angle_embed else None)
        self.layers = nn.ModuleList(Block(embed_dim, d_state, directions) for _ in range(depth))
        self.taps = tap_layers(depth, n_taps)
        self.tap_norms = nn.ModuleList(nn.LayerNorm(embed_dim, eps=1e-5) for _ in self.taps)
        self._init_weights()

    def _init_weights(self):
        # As ARM/RoMA: lecun-normal patch conv, zero Linear biases (dt bias excluded),
        # out_proj scaled by 1/sqrt(depth) so the residual stream does not grow with depth.
        w = self.patch_embed.weight
        nn.init.trunc_normal_(w, std=math.sqrt(1.0 / (w[0].numel())))
        nn.init.zeros_(self.patch_embed.bias)
        for name, m in self.named_modules():
            if isinstance(m, nn.Linear) and m.bias is not None and not getattr(m.bias, "_no_reinit", False):
                nn.init.zeros_(m.bias)
            if name.endswith("out_proj"):
                nn.init.kaiming_uniform_(m.weight, a=math.sqrt(5))
                with torch.no_grad():
                    m.weight /= math.sqrt(self.depth)

    def embed(self, images, region=None, angle=None):
        """(B, 3, H, W) -> (B, gh*gw, d) raster tokens with positions (and angle embedding)."""
        if images.shape[-2:] != (self.img_size, self.img_size):
            raise ValueError(f"expected images of {self.img_size}x{self.img_size}, got {tuple(images.shape[-2:])}")
        x = self.patch_embed(images).flatten(2).transpose(1, 2)
        x = x + self.pos_embed.to(x.dtype)
        if self.angle_embed is not None and region is not None:
            x = self.angle_embed(x, region, angle, *self.grid)
        return x

    def forward_taps(self, images, region=None, angle=None, n_clusters: int | None = None):
        """Pretraining path: cluster-ordered tokens of the first n_clusters clusters -> taps.

        Returns a list of LayerNorm'd tap outputs, each (B, n_clusters * c^2, d).
        """
        x = self.embed(images, region, angle)
        order = cluster_order(*self.grid, self.cluster_size).to(x.device)
        if n_clusters is not None:
            order = order[: n_clusters * self.cluster_size**2]
        h = x[:, order]
        taps = []
        for i, layer in enumerate(self.layers, start=1):
            h = layer(h)
            if i in self.taps:
                taps.append(self.tap_norms[self.taps.index(i)](h))
        return taps

    def forward_tokens(self, images):
        """Raster-order features (B, gh*gw, d): the last tap norm applied to the final layer."""
        x = self.embed(images)
        col_perm = column_major_perm(*self.grid).to(x.device)
        for layer in self.layers:
            x = layer(x, col_perm)
        return self.tap_norms[-1](x)
