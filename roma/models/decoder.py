"""ARM's autoregressive decoder: cross-attention-only blocks over the encoder taps.

Queries are one learnable token plus a fixed sin-cos position; a block-causal mask lets the
queries of cluster k see only encoder outputs of clusters < k. Queries never attend to each other,
so any set of queries can run in one pass, each with its own mask row.

MSP (multi-scale prediction) adds, per block size s, one query per patch of every s x s block,
masked to the clusters strictly before the first cluster the block touches (so a block never sees
its own pixels), and a small head that mixes the block's s*s hidden states and predicts its pixels.
Blocks that touch cluster 0 have no context and are not predicted, like cluster 0 itself.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from roma.models.encoder import cluster_order, sincos_pos_embed_2d


class CrossAttention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"decoder dim {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, q, kv, mask):
        """q: (B, Q, C); kv: (B, M, C); mask: (Q, M) bool, True = may attend."""
        B, Q, C = q.shape
        h = self.heads
        q = self.q(q).view(B, Q, h, C // h).transpose(1, 2)  # (B, h, Q, c)
        k, v = self.kv(kv).view(B, -1, 2, h, C // h).permute(2, 0, 3, 1, 4)  # (B, h, M, c) each
        if q.device.type == "cpu" and q.dtype != torch.float32:
            # bf16 on a CPU: two matmuls beat SDPA's flash kernel, whose bf16 backward alone took a
            # fifth of a bf16 micro step (these maps are small, queries x encoder tokens); in fp32
            # that kernel is the faster one. GPUs keep SDPA: a roma_base map at batch 64 would not fit.
            attn = (q * (C // h) ** -0.5) @ k.transpose(-2, -1)  # (B, h, Q, M)
            out = attn.masked_fill(~mask, float("-inf")).softmax(-1).to(v.dtype) @ v
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.proj(out.transpose(1, 2).reshape(B, Q, C))


class DecoderBlock(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm_q, self.norm_kv = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = CrossAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, q, kv, mask):
        q = q + self.attn(self.norm_q(q), self.norm_kv(kv), mask)
        return q + self.mlp(self.norm2(q))


class BlockHead(nn.Module):
    """MSP head: mixes a block's s*s hidden states, then predicts each patch of the block.

    (B, nb, s*s, dim) -> (B, nb, s*s, patch_dim). Token mixing lets the block prediction use the
    whole block's context; the channel MLP maps to pixels.
    """

    def __init__(self, s: int, dim: int, hidden: int, patch_dim: int):
        super().__init__()
        n = s * s
        self.norm1 = nn.LayerNorm(dim)
        self.mix = nn.Sequential(nn.Linear(n, 4 * n), nn.GELU(), nn.Linear(4 * n, n))
        self.norm2 = nn.LayerNorm(dim)
        self.out = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, patch_dim))

    def forward(self, x):
        x = x + self.mix(self.norm1(x).transpose(-1, -2)).transpose(-1, -2)
        return self.out(self.norm2(x))


def cluster_of(gh: int, gw: int, c: int) -> torch.Tensor:
    """(gh*gw,) cluster id of each raster position."""
    rows = torch.arange(gh)[:, None] // c
    cols = torch.arange(gw)[None, :] // c
    return (rows * (gw // c) + cols).reshape(-1)


def block_layout(gh: int, gw: int, c: int, s: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Predicted s x s blocks: (nb, s*s) raster indices (row-major in the block) and (nb,) first cluster."""
    if gh % s or gw % s:
        raise ValueError(f"MSP block size {s} does not divide the patch grid {gh}x{gw}")
    idx = torch.arange(gh * gw).view(gh // s, s, gw // s, s).permute(0, 2, 1, 3).reshape(-1, s * s)
    first = cluster_of(gh, gw, c)[idx].min(1).values
    keep = first >= 1
    return idx[keep], first[keep]


class ARDecoder(nn.Module):
    def __init__(self, enc_dim: int, grid: tuple[int, int], cluster_size: int, patch_dim: int,
                 dim: int = 512, depth: int = 4, heads: int = 8, mlp_ratio: float = 4.0,
                 msp_scales: tuple[int, ...] = (), msp_hidden: int = 1024):
        super().__init__()
        gh, gw = grid
        c2 = cluster_size**2
        self.depth, self.dim = depth, dim
        self.n_enc = (gh * gw // c2 - 1) * c2  # encoder tokens: all clusters but the last
        self.enc2dec = nn.Linear(depth * enc_dim, depth * dim)  # one K/V mix per decoder layer
        self.ar_token = nn.Parameter(torch.zeros(1, 1, dim))
        nn.init.trunc_normal_(self.ar_token, std=0.02)
        self.register_buffer("dec_pos", sincos_pos_embed_2d(dim, gh, gw))
        self.blocks = nn.ModuleList(DecoderBlock(dim, heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, patch_dim)
        self.msp_scales = tuple(msp_scales)
        self.block_heads = nn.ModuleDict({str(s): BlockHead(s, dim, msp_hidden, patch_dim) for s in self.msp_scales})

        # Query positions (raster) and the cluster each query may see up to (exclusive).
        order = cluster_order(gh, gw, cluster_size)
        positions = [order[c2:]]
        limits = [torch.arange(self.n_enc) // c2 + 1]  # token query of cluster k sees clusters < k
        for s in self.msp_scales:
            idx, first = block_layout(gh, gw, cluster_size, s)
            self.register_buffer(f"block_index_{s}", idx, persistent=False)
            positions.append(idx.reshape(-1))
            limits.append(first.repeat_interleave(s * s))
        enc_cluster = torch.arange(self.n_enc) // c2
        self.register_buffer("query_pos", torch.cat(positions), persistent=False)
        self.register_buffer("mask", enc_cluster[None, :] < torch.cat(limits)[:, None], persistent=False)
        self._init_weights()

    def _init_weights(self):
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def block_index(self, s: int) -> torch.Tensor:
        """(nb, s*s) raster indices of the predicted s x s blocks."""
        return getattr(self, f"block_index_{s}")

    def forward(self, taps: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        """taps: `depth` tensors (B, n_enc, enc_dim) -> {"token": (B, n_enc, patch_dim),
        "block_<s>": (B, nb, s*s, patch_dim)} in cluster order / block-raster order."""
        B = taps[0].shape[0]
        kv = self.enc2dec(torch.cat(taps, dim=-1)).view(B, self.n_enc, self.dim, self.depth)
        q = (self.ar_token + self.dec_pos[self.query_pos]).expand(B, -1, -1)
        for k, block in enumerate(self.blocks):
            q = block(q, kv[..., k], self.mask)
        out = {"token": self.head(self.norm(q[:, : self.n_enc]))}
        start = self.n_enc
        for s in self.msp_scales:
            nb = self.block_index(s).shape[0]
            hidden = q[:, start: start + nb * s * s].reshape(B, nb, s * s, self.dim)
            out[f"block_{s}"] = self.block_heads[str(s)](hidden)
            start += nb * s * s
        return out
