"""RoMAPretrain: encoder + autoregressive decoder + losses (next-cluster token MSE, MSP blocks)."""
from __future__ import annotations

import torch
import torch.nn as nn
from einops import rearrange

from roma.config import AresConfig, MspConfig
from roma.models.decoder import ARDecoder
from roma.models.encoder import RoMAEncoder, cluster_order


def patchify(images: torch.Tensor, p: int) -> torch.Tensor:
    """(B, 3, H, W) -> (B, gh*gw, p*p*3), raster patches, channel-last inside a patch (MAE layout)."""
    return rearrange(images, "b c (h p) (w q) -> b (h w) (p q c)", p=p, q=p)


def normalize_last(x: torch.Tensor, dims: int = 1) -> torch.Tensor:
    """Normalise over the last `dims` dims: mean and unbiased variance, eps 1e-6 (ARM's norm_pix)."""
    flat = x.flatten(-dims) if dims > 1 else x
    mean = flat.mean(-1, keepdim=True)
    var = flat.var(-1, unbiased=True, keepdim=True)
    return ((flat - mean) / (var + 1e-6).sqrt()).view_as(x)


class RoMAPretrain(nn.Module):
    def __init__(self, embed_dim: int, depth: int, img_size: int = 192, patch_size: int = 16,
                 cluster_size: int = 4, decoder_dim: int = 512, decoder_depth: int = 4,
                 decoder_heads: int = 8, ares: AresConfig | None = None, msp: MspConfig | None = None):
        super().__init__()
        ares = ares or AresConfig(enabled=False)
        msp = msp or MspConfig(enabled=False)
        self.patch_size, self.cluster_size = patch_size, cluster_size
        self.encoder = RoMAEncoder(
            embed_dim, depth, img_size, patch_size, cluster_size, n_taps=decoder_depth,
            angle_embed=ares.angle_embed if ares.enabled else None, angle_bins=ares.angle_bins,
            max_angle=ares.max_angle, angles=tuple(ares.angles))
        gh, gw = self.encoder.grid
        cluster_order(gh, gw, cluster_size)  # validates the grid/cluster geometry early
        self.n_clusters = gh * gw // cluster_size**2
        if self.n_clusters < 2:
            raise ValueError(f"a {gh}x{gw} patch grid holds one {cluster_size}x{cluster_size} cluster: nothing to predict")
        self.msp_weight = msp.weight if msp.enabled else 0.0
        self.decoder = ARDecoder(
            embed_dim, (gh, gw), cluster_size, patch_size * patch_size * 3, decoder_dim, decoder_depth,
            decoder_heads, msp_scales=tuple(msp.scales) if msp.enabled else (), msp_hidden=msp.hidden_dim)
        self.register_buffer("order", cluster_order(gh, gw, cluster_size), persistent=False)

    def forward(self, images, target=None, region=None, angle=None) -> dict[str, torch.Tensor]:
        """images/target (B, 3, H, W) normalised; region (B, 3) long; angle (B,) degrees."""
        target = images if target is None else target
        if region is not None and angle is None:
            raise ValueError("region given without angle")
        taps = self.encoder.forward_taps(images, region, angle, n_clusters=self.n_clusters - 1)
        preds = self.decoder(taps)
        patches = patchify(target.float(), self.patch_size)  # (B, N, P)
        c2 = self.cluster_size**2
        tok_target = normalize_last(patches)[:, self.order[c2:]]
        out = {"loss_token": ((preds["token"].float() - tok_target) ** 2).mean()}
        block_losses = []
        for s in self.decoder.msp_scales:
            blocks = normalize_last(patches[:, self.decoder.block_index(s)], dims=2)  # (B, nb, s*s, P)
            out[f"loss_block_s{s}"] = ((preds[f"block_{s}"].float() - blocks) ** 2).mean()
            block_losses.append(out[f"loss_block_s{s}"])
        out["loss"] = out["loss_token"]
        if block_losses:
            out["loss"] = out["loss"] + self.msp_weight * torch.stack(block_losses).mean()
        return out

    @torch.no_grad()
    def predictions(self, images, region=None, angle=None) -> dict[str, torch.Tensor]:
        """The raw decoder outputs (for tests and visualisation)."""
        taps = self.encoder.forward_taps(images, region, angle, n_clusters=self.n_clusters - 1)
        return self.decoder(taps)
