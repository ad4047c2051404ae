"""ViT-B/16 baseline (the MAE row of the paper's tables, and the high-resolution comparison).

timm's `vit_base_patch16_224` is used when timm imports (GPU clusters usually have it); otherwise
this timm-compatible copy (same module names, so timm/MAE checkpoints load into either). timm
cannot be installed beside the CPU-only torch wheel used for CI, because it needs torchvision.
Attention goes through `F.scaled_dot_product_attention`; `attention="math"` forces the
materialised L x L attention matrix, as naive ViT code does (what the paper's ViT-B likely ran).
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn as nn
import torch.nn.functional as F


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, L, C = x.shape
        q, k, v = self.qkv(x).view(B, L, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        return self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, L, C))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim, eps=1e-6), Attention(dim, heads)
        self.norm2, self.mlp = nn.LayerNorm(dim, eps=1e-6), Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    def __init__(self, patch: int, dim: int):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, patch, stride=patch)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)


class VisionTransformer(nn.Module):
    """ViT with a cls token and learned positions, at a fixed img_size (rebuild for another)."""

    def __init__(self, img_size: int = 224, patch_size: int = 16, embed_dim: int = 768, depth: int = 12,
                 heads: int = 12):
        super().__init__()
        self.embed_dim, self.patch_size = embed_dim, patch_size
        n = (img_size // patch_size) ** 2
        self.patch_embed = PatchEmbed(patch_size, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.randn(1, n + 1, embed_dim) * 0.02)
        self.blocks = nn.ModuleList(Block(embed_dim, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)

    def forward_features(self, x):
        x = self.patch_embed(x)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], 1) + self.pos_embed
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)


def vit_base_patch16(img_size: int = 224, prefer_timm: bool = True) -> nn.Module:
    """ViT-B/16 at img_size: timm's when importable, else the copy above. Has forward_features."""
    if prefer_timm:
        try:
            import timm

            return timm.create_model("vit_base_patch16_224", pretrained=False, img_size=img_size, num_classes=0)
        except Exception:  # noqa: BLE001 - no timm, or a timm/torchvision mismatch
            pass
    return VisionTransformer(img_size=img_size)


def attention_backend(name: str):
    """Context manager forcing SDPA's backend: "sdpa" (torch's choice: flash/efficient) or "math"."""
    if name == "sdpa":
        return contextlib.nullcontext()
    if name == "math":
        from torch.nn.attention import SDPBackend, sdpa_kernel

        return sdpa_kernel(SDPBackend.MATH)
    raise ValueError(f"attention must be 'sdpa' or 'math', got {name!r}")
