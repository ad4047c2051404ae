"""The fused CUDA Mamba mixer: mamba-ssm's ``mamba_inner_fn``, called the way the released RoMA code does.

``mamba_inner_fn(xz, conv1d_weight, conv1d_bias, x_proj_weight, delta_proj_weight,
out_proj_weight, out_proj_bias, A, B=None, C=None, D=None, delta_bias=None, ...,
delta_softplus=True, checkpoint_lvl=1)`` runs, for xz = in_proj(h): (B, 2D, L),

    x, z = xz.chunk(2)                        (B, D, L) each
    x = silu(causal_conv1d(x))                depthwise, kernel K
    dt | B | C = x_proj(x)                    (B*L, R + 2N)
    dt = dt_proj.weight @ dt                  (B, D, L), bias and softplus inside the scan
    y = selective_scan(x, dt, A, B, C, D, z)  gated by silu(z)
    out = out_proj(y)                         (B, L, d_model)

as one autograd Function that keeps only xz and the projections for the backward and recomputes
the conv output and dt there (checkpoint_lvl=1): that is where the released code's memory goes.

One direction (pretraining) is one call. The v3 downstream mixer (four scans sharing in_proj
and out_proj) is one call per direction on xz in that direction's token order, each with
out_proj.weight / k (k active directions): out_proj is linear, so the sum of the k outputs,
brought back to raster order, is out_proj of the mean, as in the unfused module. The price is
k - 1 extra out_proj products per layer (the released downstream code calls a mamba-ssm fork's
``mamba_inner_fn_no_out_proj`` instead, which upstream mamba-ssm does not have).

``mamba_inner_ref`` states the same contract in plain PyTorch (over the sequential reference
scan): the CPU tests plug it in as a stand-in kernel to check the plumbing, and the GPU tests
compare the real kernel against it.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange

from roma.models import scan
from roma.models.scan import selective_scan_ref


def mamba_inner_ref(xz, conv1d_weight, conv1d_bias, x_proj_weight, delta_proj_weight, out_proj_weight,
                    out_proj_bias, A, B=None, C=None, D=None, delta_bias=None, B_proj_bias=None,
                    C_proj_bias=None, delta_softplus=True, checkpoint_lvl=1, scan_fn=selective_scan_ref):
    """mamba_inner_fn's math, unfused (variable B and C from x_proj only; no recomputation).

    scan_fn: the sequential reference by default (independent of the module's own scan)."""
    if B is not None or C is not None or B_proj_bias is not None or C_proj_bias is not None:
        raise NotImplementedError("mamba_inner_ref covers the input-dependent B and C of Mamba-1 only")
    batch, two_d, L = xz.shape
    d_inner, rank, n = conv1d_weight.shape[0], delta_proj_weight.shape[1], A.shape[1]
    if two_d != 2 * d_inner or conv1d_weight.shape[1] != 1 or x_proj_weight.shape != (rank + 2 * n, d_inner) \
            or delta_proj_weight.shape[0] != d_inner or out_proj_weight.shape[1] != d_inner or A.shape[0] != d_inner:
        raise ValueError(f"mamba_inner_ref: inconsistent shapes xz {tuple(xz.shape)}, conv "
                         f"{tuple(conv1d_weight.shape)}, x_proj {tuple(x_proj_weight.shape)}, dt_proj "
                         f"{tuple(delta_proj_weight.shape)}, out_proj {tuple(out_proj_weight.shape)}, A {tuple(A.shape)}")
    x, z = xz.chunk(2, dim=1)
    k = conv1d_weight.shape[-1]
    x = F.silu(F.conv1d(x, conv1d_weight, conv1d_bias, padding=k - 1, groups=d_inner)[..., :L])
    x_dbl = F.linear(rearrange(x, "b d l -> (b l) d"), x_proj_weight)
    dt = rearrange(F.linear(x_dbl[:, :rank], delta_proj_weight), "(b l) d -> b d l", l=L)
    Bm = rearrange(x_dbl[:, rank:rank + n], "(b l) n -> b n l", l=L)
    Cm = rearrange(x_dbl[:, rank + n:], "(b l) n -> b n l", l=L)
    y = scan_fn(x, dt, A, Bm, Cm, D, z, delta_bias, delta_softplus)
    return F.linear(rearrange(y, "b d l -> b l d"), out_proj_weight, out_proj_bias)


def fused_kernel(device: torch.device, length: int):
    """mamba_inner_fn when the scan backend for `device` is ``cuda`` (automatic on a GPU with
    mamba-ssm, or ROMA_SCAN=cuda) and causal-conv1d is there too; else None (the unfused module)."""
    if scan.resolve_backend(device, length=length) != "cuda":
        return None
    return scan.mamba_ssm_kernels().mamba_inner_fn


def mamba_forward_fused(mixer, hidden: torch.Tensor, col_perm: torch.Tensor | None, inner) -> torch.Tensor:
    """roma.models.mamba.Mamba's forward through `inner` (mamba_inner_fn). hidden: (B, L, d_model) -> same."""
    L = hidden.shape[1]
    # in_proj as W @ h^T, as the released code: xz comes out (B, 2D, L) with L contiguous
    xz = rearrange(mixer.in_proj.weight @ rearrange(hidden, "b l d -> d (b l)"), "d (b l) -> b d l", l=L)
    if mixer.in_proj.bias is not None:
        xz = xz + mixer.in_proj.bias.to(xz.dtype)[:, None]
    out_w = mixer.out_proj.weight / len(mixer.active) if len(mixer.active) > 1 else mixer.out_proj.weight
    out = None
    for s in mixer.active:
        conv, x_proj, dt_proj, A_log, D = mixer._params(s)
        xs = mixer.to_scan_order(xz, s, col_perm, dim=-1)  # L stays the unit-stride axis: no copy for raster
        bias = mixer.out_proj.bias if out is None else None  # the bias once, not once per direction
        y = inner(xs, conv.weight, conv.bias, x_proj.weight, dt_proj.weight, out_w, bias,
                  -torch.exp(A_log.float()), None, None, D.float(), dt_proj.bias.float(),
                  delta_softplus=True)  # (B, L, d_model) in this direction's token order
        y = mixer.to_raster_order(y, s, col_perm, dim=1)
        out = y if out is None else out + y
    return out
