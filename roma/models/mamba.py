"""The Mamba-1 (S6) mixer, with one scan direction (pretraining) or four (``v3``, downstream).

Parameter names follow mamba-ssm's ``Mamba`` (in_proj, conv1d, x_proj, dt_proj, A_log, D,
out_proj), so single-direction checkpoints move between the two. The extra v3 directions use
the names of RoMA's downstream code: ``conv1d_b``, ``x_proj_b``, ``dt_proj_b``, ``A_b_log``,
``D_b`` and the same with ``_c`` (column-major) and ``_c_b`` (column-major, backward).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from roma.models.fused import fused_kernel, mamba_forward_fused
from roma.models.scan import causal_conv1d, selective_scan

# direction suffix -> (column-major?, reversed?)
DIRECTIONS = {"": (False, False), "_b": (False, True), "_c": (True, False), "_c_b": (True, True)}


class Mamba(nn.Module):
    def __init__(self, d_model: int, d_state: int = 16, d_conv: int = 4, expand: int = 1,
                 dt_rank: int | None = None, dt_min: float = 1e-3, dt_max: float = 1e-1,
                 dt_init_floor: float = 1e-4, directions: int = 1):
        super().__init__()
        if directions not in (1, 4):
            raise ValueError(f"directions must be 1 (uni) or 4 (v3), got {directions}")
        self.d_model, self.d_state, self.d_conv = d_model, d_state, d_conv
        self.d_inner = expand * d_model
        self.dt_rank = dt_rank or math.ceil(d_model / 16)
        self.suffixes = list(DIRECTIONS)[:directions]
        self.active = list(self.suffixes)  # directions averaged in forward (tests switch some off)

        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=False)
        for s in self.suffixes:
            self._add_direction(s, dt_min, dt_max, dt_init_floor)
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=False)

    def _add_direction(self, s: str, dt_min: float, dt_max: float, floor: float) -> None:
        di, n, r = self.d_inner, self.d_state, self.dt_rank
        conv = nn.Conv1d(di, di, self.d_conv, groups=di, padding=self.d_conv - 1, bias=True)
        x_proj = nn.Linear(di, r + 2 * n, bias=False)
        dt_proj = nn.Linear(r, di, bias=True)
        nn.init.uniform_(dt_proj.weight, -(r**-0.5), r**-0.5)
        # dt ~ log-uniform in [dt_min, dt_max]; bias = softplus^-1(dt) so softplus(bias) = dt
        dt = torch.exp(torch.rand(di) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        dt = dt.clamp(min=floor)
        with torch.no_grad():
            dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))
        dt_proj.bias._no_reinit = True  # type: ignore[attr-defined]
        A_log = nn.Parameter(torch.log(torch.arange(1, n + 1, dtype=torch.float32)).repeat(di, 1))
        D = nn.Parameter(torch.ones(di))
        A_log._no_weight_decay = D._no_weight_decay = True  # type: ignore[attr-defined]
        setattr(self, "conv1d" + s, conv)
        setattr(self, "x_proj" + s, x_proj)
        setattr(self, "dt_proj" + s, dt_proj)
        setattr(self, "A" + s + "_log" if s else "A_log", A_log)
        setattr(self, "D" + s, D)

    def _params(self, s: str):
        return (getattr(self, "conv1d" + s), getattr(self, "x_proj" + s), getattr(self, "dt_proj" + s),
                getattr(self, "A" + s + "_log" if s else "A_log"), getattr(self, "D" + s))

    def _scan(self, x: torch.Tensor, s: str) -> torch.Tensor:
        """One direction over x: (B, D, L) already in its scan order -> (B, D, L), ungated."""
        conv, x_proj, dt_proj, A_log, D = self._params(s)
        L = x.shape[-1]
        x = causal_conv1d(x, conv.weight, conv.bias)
        x_dbl = x_proj(rearrange(x, "b d l -> (b l) d"))  # (B*L, r + 2N)
        dt, Bm, Cm = torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt = rearrange(dt_proj.weight @ dt.t(), "d (b l) -> b d l", l=L)
        Bm = rearrange(Bm, "(b l) n -> b n l", l=L).contiguous()
        Cm = rearrange(Cm, "(b l) n -> b n l", l=L).contiguous()
        A = -torch.exp(A_log.float())
        return selective_scan(x, dt, A, Bm, Cm, D.float(), None, dt_proj.bias.float(), delta_softplus=True)

    def to_scan_order(self, t: torch.Tensor, s: str, col_perm: torch.Tensor | None, dim: int) -> torch.Tensor:
        """t with its token axis `dim` in direction s's scan order (raster, column-major, reversed)."""
        column, backward = DIRECTIONS[s]
        if column:
            if col_perm is None:
                raise ValueError("a column-major scan direction needs col_perm (the encoder's grid)")
            t = t.index_select(dim, col_perm)
        return t.flip(dim) if backward else t

    def to_raster_order(self, t: torch.Tensor, s: str, col_perm: torch.Tensor | None, dim: int) -> torch.Tensor:
        """The inverse of to_scan_order."""
        column, backward = DIRECTIONS[s]
        if backward:
            t = t.flip(dim)
        return torch.empty_like(t).index_copy_(dim, col_perm, t) if column else t

    def forward(self, hidden: torch.Tensor, col_perm: torch.Tensor | None = None) -> torch.Tensor:
        """hidden: (B, L, d_model) -> (B, L, d_model).

        col_perm: (L,) long, the column-major order of the tokens (only for 4 directions); the
        encoder builds it from its grid (keeping a cls token in place). With mamba-ssm on a GPU
        (scan backend ``cuda``) the fused ``mamba_inner_fn`` runs instead (roma/models/fused.py).
        """
        inner = fused_kernel(hidden.device, hidden.shape[1])
        if inner is not None:
            return mamba_forward_fused(self, hidden, col_perm, inner)
        xz = rearrange(self.in_proj(hidden), "b l d -> b d l")
        x, z = xz.chunk(2, dim=1)  # (B, D, L) each
        ys = [self.to_raster_order(self._scan(self.to_scan_order(x, s, col_perm, -1).contiguous(), s), s, col_perm, -1)
              for s in self.active]
        y = ys[0] if len(ys) == 1 else torch.stack(ys).mean(0)
        y = y * F.silu(z)  # the gate is elementwise, so gating the mean equals averaging gated scans
        return self.out_proj(rearrange(y, "b d l -> b l d"))


def expand_to_v3(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Copy single-direction mixer weights into all four v3 directions (as RoMA's downstream code)."""
    out = dict(state_dict)
    for key, value in state_dict.items():
        if ".mixer." not in key:
            continue
        prefix, name = key.rsplit(".mixer.", 1)
        head, _, tail = name.partition(".")
        if head in ("conv1d", "x_proj", "dt_proj", "D"):
            for s in ("_b", "_c", "_c_b"):
                out[f"{prefix}.mixer.{head}{s}" + (f".{tail}" if tail else "")] = value.clone()
        elif head == "A_log":
            for s in ("_b", "_c", "_c_b"):
                out[f"{prefix}.mixer.A{s}_log"] = value.clone()
    return out
