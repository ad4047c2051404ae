"""Selective scan (Mamba-1 / S6) backends.

    h_t = exp(dt_t * A) * h_{t-1} + dt_t * B_t * u_t        h: (B, D, N) per step
    y_t = <C_t, h_t> + D * u_t,  then  y *= silu(z)           y: (B, D) per step

Five interchangeable implementations with mamba-ssm's `selective_scan_fn` signature
(u, delta: (B, D, L); A: (D, N); B, C: (B, N, L); D: (D,); z: (B, D, L); delta_bias: (D,)):

- ``ref``  : the plain per-step loop, differentiated by autograd. Slow (its backward is
             O(L^2) in memory traffic) but obviously right: the test reference.
- ``fast`` : a custom autograd Function, time-major, with a hand-written backward. On CPU the
             scan is memory-bound, so one in-place pass per step over a (B, D, N) slice that
             stays in cache beats chunked / parallel scans (measured in
             ../shared/docs/mamba-on-cpu.md and benchmarks/scan.py).
- ``native``: ``fast`` with its training recurrences in C (roma/models/native_scan.py), compiled
             once per machine with the system C compiler: each step's state is updated, reduced and
             differentiated while in cache. fp32 only (fp64 inputs, e.g. gradcheck, run ``fast``).
- ``chunked``: closed form inside chunks, a loop over chunks only: for GPUs without mamba-ssm,
             where a per-step loop is bound by kernel launches.
- ``cuda`` : mamba-ssm's fused kernel, imported lazily, used for CUDA tensors when installed.

Selection: ``ROMA_SCAN=ref|fast|native|chunked|cuda`` forces a backend (an unavailable one is an error);
otherwise CUDA tensors use ``cuda`` when mamba-ssm imports, else ``chunked`` for long sequences
(L > CHUNKED_MIN_LENGTH) and ``fast`` for short ones; CPU tensors use ``native`` when a C compiler
built it, else ``fast``.
"""
from __future__ import annotations

import functools
import importlib
import importlib.util
import os
import sys
import types
from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F

from roma.models import native_scan

BACKENDS = ("ref", "fast", "native", "chunked", "cuda")


# ----------------------------------------------------------------------------- reference
def selective_scan_ref(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """Sequential reference scan (autograd through every step)."""
    dtype_in = u.dtype
    u, delta, A, B, C = (t.float() for t in (u, delta, A, B, C))
    if delta_bias is not None:
        delta = delta + delta_bias.float()[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    batch, dim, length = u.shape
    deltaA = torch.exp(torch.einsum("bdl,dn->bdln", delta, A))  # (B, D, L, N)
    deltaB_u = torch.einsum("bdl,bnl,bdl->bdln", delta, B, u)  # (B, D, L, N)
    h = u.new_zeros(batch, dim, A.shape[1])
    ys = []
    for i in range(length):
        h = deltaA[:, :, i] * h + deltaB_u[:, :, i]
        ys.append(torch.einsum("bdn,bn->bd", h, C[:, :, i]))
    y = torch.stack(ys, dim=2)  # (B, D, L)
    return _skip_and_gate(y, u, D, z).to(dtype_in)


def _to_work(work, u, delta, A, B, C, delta_bias, delta_softplus):
    """Inputs in the scan's working dtype, with dt's bias and softplus applied."""
    u, delta, A, B, C = (t.to(work) for t in (u, delta, A, B, C))
    if delta_bias is not None:
        delta = delta + delta_bias.to(work)[:, None]
    return u, (F.softplus(delta) if delta_softplus else delta), A, B, C


def _skip_and_gate(y, u, D, z):
    if D is not None:
        y = y + u * D.to(y.dtype)[:, None]
    if z is not None:
        y = y * F.silu(z.to(y.dtype))
    return y


# ----------------------------------------------------------------------------- fast (CPU)
class _ScanCore(torch.autograd.Function):
    """y_t = <C_t, h_t>, h_t = exp(dt_t A) h_{t-1} + dt_t u_t B_t, all fp32, time-major.

    Inputs are time-major and contiguous: dt, u: (L, B, D); A: (D, N); Bm, Cm: (L, B, N).
    Inside, states are (L, B, N, D), channels innermost, and the states H and decays exp(dt A)
    are saved for the backward.

    Written for a memory-bound CPU (../shared/docs/mamba-on-cpu.md): the only per-step work is one
    in-place ``addcmul_`` on a (B, N, D) slice that stays in cache; the rest is a few whole-tensor
    passes. Contractions are a broadcast multiply + sum: with D innermost every pass runs over long
    contiguous rows (with N = 16 innermost, or through ``einsum``/``bmm``, which makes thousands of
    tiny matrix-vector products plus a transposing copy, the same work is several times slower).
    The backward reuses one scratch tensor for its products (fresh multi-MB tensors page-fault).
    """

    @staticmethod
    def forward(ctx, dt, u, A, Bm, Cm):
        At = A.t().contiguous()  # (N, D)
        dA = torch.mul(dt.unsqueeze(2), At).exp_()  # (L, B, N, D): the decays a_t
        H = torch.mul((dt * u).unsqueeze(2), Bm.unsqueeze(-1))  # (L, B, N, D): dt u B, becomes the states
        hs, decays = H.unbind(0), dA.unbind(0)
        for t in range(1, len(hs)):
            hs[t].addcmul_(decays[t], hs[t - 1])  # h_t = a_t * h_{t-1} + b_t, in place
        y = torch.mul(H, Cm.unsqueeze(-1)).sum(2)  # (L, B, D)
        ctx.save_for_backward(dt, u, At, Bm, Cm, H, dA)
        return y

    @staticmethod
    def backward(ctx, gy):
        dt, u, At, Bm, Cm, H, dA = ctx.saved_tensors
        gy = gy.contiguous()
        scratch = torch.mul(H, gy.unsqueeze(2))
        gC = scratch.sum(-1)  # (L, B, N)
        G = torch.mul(gy.unsqueeze(2), Cm.unsqueeze(-1))  # dL/dh_t from y_t, then accumulated backwards
        gs, decays = G.unbind(0), dA.unbind(0)
        for t in range(len(gs) - 2, -1, -1):
            gs[t].addcmul_(decays[t + 1], gs[t + 1])  # g_t += a_{t+1} * g_{t+1}
        # b_t = dt u B  ->  grads through G
        GB = torch.mul(G, Bm.unsqueeze(-1), out=scratch).sum(2)  # (L, B, D): sum_n g B
        gBm = torch.mul(G, (dt * u).unsqueeze(2), out=scratch).sum(-1)  # (L, B, N)
        gu = dt * GB
        gdt = u * GB
        # a_t = exp(dt A) -> dL/d(dt A) = g_t * a_t * h_{t-1}  (zero at t = 0, h_{-1} = 0), in G
        G[1:].mul_(dA[1:]).mul_(H[:-1])
        G[0].zero_()
        gdt += torch.mul(G, At, out=scratch).sum(2)
        gA = G.mul_(dt.unsqueeze(2)).flatten(0, 1).sum(0)  # (N, D): summed over time and batch
        return gdt, gu, gA.t().contiguous(), gBm, gC


def _scan_streaming(dt, u, A, Bm, Cm):
    """Inference form of _ScanCore.forward: keeps only the running state (B, D, N), which stays in
    cache, instead of every step's state (about 4x faster for feature extraction on CPU)."""
    h = dt.new_zeros(dt.shape[1], dt.shape[2], A.shape[1])
    y = dt.new_empty(dt.shape)
    for t in range(dt.shape[0]):
        h.mul_(torch.exp(dt[t].unsqueeze(-1) * A)).addcmul_((dt[t] * u[t]).unsqueeze(-1), Bm[t].unsqueeze(1))
        torch.bmm(h, Cm[t].unsqueeze(-1), out=y[t].unsqueeze(-1))
    return y


def selective_scan_fast(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                        native: bool = False):
    dtype_in = u.dtype
    work = torch.float64 if dtype_in == torch.float64 else torch.float32  # bf16/fp16 inputs scan in fp32
    with torch.autocast(device_type=u.device.type, enabled=False):
        u32, delta, A, B, C = _to_work(work, u, delta, A, B, C, delta_bias, delta_softplus)
        tm = lambda t: t.permute(2, 0, 1).contiguous()  # (B, X, L) -> (L, B, X)
        tracked = torch.is_grad_enabled() and any(t.requires_grad for t in (u, delta, A, B, C))
        if not tracked:
            core = _scan_streaming
        elif native and work == torch.float32 and u.device.type == "cpu":
            core = native_scan.NativeScan.apply
        else:
            core = _ScanCore.apply
        y = core(tm(delta), tm(u32), A.contiguous(), tm(B), tm(C)).permute(1, 2, 0)
        y = _skip_and_gate(y, u32, D, z)
    return y.to(dtype_in)


def selective_scan_native(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    if not native_scan.available():
        raise RuntimeError("ROMA_SCAN=native but the C scan could not be built here (see the warning above; "
                           "set CC to a working C compiler, or use ROMA_SCAN=fast)")
    return selective_scan_fast(u, delta, A, B, C, D, z, delta_bias, delta_softplus, native=True)


# ----------------------------------------------------------------------------- chunked (GPU, no mamba-ssm)
INFERENCE_SLICE_ELEMENTS = 1 << 28  # (B, d, L, N) elements per slice without autograd: 1 GiB fp32

def selective_scan_chunked(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                           chunk: int = 64):
    """Chunk-parallel scan: closed form inside chunks of T steps, a short loop over chunks.

    With R_t = sum_{r<=t} dt_r A inside a chunk and M = R_T / 2,
        h_t = exp(R_t - M) * cumsum_s(exp(M - R_s) b_s) + exp(R_t) h_prev,
    so every exponent stays within |R_T| / 2. A chunk whose decay range could overflow fp32 is
    recomputed with half the chunk length (T = 1 is the plain recurrence). Only L / T sequential
    steps remain: the backend of choice on a GPU without mamba-ssm, where the per-step loop of
    ``fast`` is launch-bound. Differentiated by autograd (memory: a few (B, D, L, N) tensors).
    """
    dtype_in = u.dtype
    work = torch.float64 if dtype_in == torch.float64 else torch.float32
    tracked = torch.is_grad_enabled() and any(t is not None and t.requires_grad
                                              for t in (u, delta, A, B, C, D, z, delta_bias))
    if not tracked and u.shape[1] > 1 and u.numel() * A.shape[1] > INFERENCE_SLICE_ELEMENTS:
        # Inference: channels are independent, so scan them in slices and keep only a slice's
        # (B, d, L, N) intermediates alive (a 4096 px RoMA-B layer would hold gigabytes at once).
        step = max(1, INFERENCE_SLICE_ELEMENTS // (u.shape[0] * u.shape[2] * A.shape[1]))
        sl = lambda t, i: None if t is None else t[i:i + step]
        return torch.cat([selective_scan_chunked(
            u[:, i:i + step], delta[:, i:i + step], A[i:i + step], B, C, sl(D, i),
            None if z is None else z[:, i:i + step], sl(delta_bias, i), delta_softplus, chunk)
            for i in range(0, u.shape[1], step)], dim=1)
    with torch.autocast(device_type=u.device.type, enabled=False):
        u32, delta, A, B, C = _to_work(work, u, delta, A, B, C, delta_bias, delta_softplus)
        batch, dim, length = u32.shape
        n = A.shape[1]
        T = max(1, min(chunk, length))
        span = (delta.amax(-1) * (-A).amax(-1)).max().item()  # bound on the per-step decay |dt A|
        while T > 1 and span * T > 160.0:  # exp(80) is far from fp32's overflow at exp(88)
            T //= 2
        pad = (-length) % T
        if pad:  # dt = 0 steps keep the state and add nothing
            delta, u_p, B, C = (F.pad(t, (0, pad)) for t in (delta, u32, B, C))
        else:
            u_p = u32
        nc = (length + pad) // T
        dA = (delta.unsqueeze(-1) * A[:, None, :]).view(batch, dim, nc, T, n)  # (B, D, nc, T, N)
        Bc = B.transpose(1, 2).reshape(batch, 1, nc, T, n)
        Cc = C.transpose(1, 2).reshape(batch, 1, nc, T, n)
        b = (delta * u_p).view(batch, dim, nc, T, 1) * Bc
        R = dA.cumsum(3)
        if T == 1:  # the plain recurrence: a step's own state from zero is just b
            h = b
        else:
            M = R[:, :, :, -1:] / 2
            h = torch.exp(R - M) * torch.cumsum(torch.exp(M - R) * b, dim=3)  # states from a zero start
        decay = torch.exp(R[:, :, :, -1])  # (B, D, nc, N)
        carry, carries = torch.zeros_like(decay[:, :, 0]), []
        for c in range(nc):
            carries.append(carry)
            carry = decay[:, :, c] * carry + h[:, :, c, -1]
        h = h + torch.exp(R) * torch.stack(carries, 2).unsqueeze(3)
        y = (h * Cc).sum(-1).reshape(batch, dim, nc * T)[..., :length]
        y = _skip_and_gate(y, u32, D, z)
    return y.to(dtype_in)


# ----------------------------------------------------------------------------- CUDA (mamba-ssm)
class Kernels(NamedTuple):
    """mamba-ssm's and causal-conv1d's entry points (see roma/models/fused.py for the fused one)."""

    selective_scan_fn: Callable
    causal_conv1d_fn: Callable | None  # None: causal-conv1d missing (then no mamba_inner_fn either)
    mamba_inner_fn: Callable | None  # conv + x/dt projections + scan + out_proj, recomputing in backward
    device_type: str = "cuda"  # where their tensors live (a test double computing the same math says "cpu")


def _import_mamba_interface():
    """mamba_ssm.ops.selective_scan_interface, without mamba_ssm/__init__.py if that alone fails.

    The package's __init__ imports every model it ships (Mamba2/3 need transformers,
    huggingface_hub, tilelang); an offline GPU node may lack those although the compiled scan and
    everything the interface itself imports (triton, causal-conv1d) are there. Then the package
    is registered bare (its path, no __init__) and only the interface module is imported.
    """
    name = "mamba_ssm.ops.selective_scan_interface"
    try:
        return importlib.import_module(name)
    except ImportError as err:
        spec = importlib.util.find_spec("mamba_ssm")
        missing = getattr(err, "name", None) or ""
        if spec is None or not spec.submodule_search_locations or missing == "selective_scan_cuda" \
                or missing.startswith("mamba_ssm"):
            raise
    for key in [k for k in sys.modules if k == "mamba_ssm" or k.startswith("mamba_ssm.")]:
        del sys.modules[key]  # drop what the failed import left half-initialised
    bare = types.ModuleType("mamba_ssm")
    bare.__path__ = list(spec.submodule_search_locations)
    sys.modules["mamba_ssm"] = bare
    try:
        return importlib.import_module(name)
    except BaseException:
        sys.modules.pop("mamba_ssm", None)
        raise


@functools.lru_cache(maxsize=1)
def mamba_ssm_kernels() -> Kernels | None:
    """The mamba-ssm / causal-conv1d kernels, or None when they cannot be used here.

    Imported lazily: mamba-ssm fails to import on CPU-only machines and takes seconds to load.
    A wheel built against another torch fails with ImportError/OSError ('undefined symbol'),
    so anything raised counts as unavailable.
    """
    try:
        interface = _import_mamba_interface()
    except Exception:  # noqa: BLE001 - any failure means the kernel is unusable
        return None
    try:
        from causal_conv1d import causal_conv1d_fn
    except Exception:  # noqa: BLE001
        causal_conv1d_fn = None
    inner = getattr(interface, "mamba_inner_fn", None) if causal_conv1d_fn is not None else None
    return Kernels(interface.selective_scan_fn, causal_conv1d_fn, inner)


def selective_scan_cuda(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    kernels = mamba_ssm_kernels()
    if kernels is None:
        raise RuntimeError("ROMA_SCAN=cuda but mamba-ssm is not importable; install the `cuda` extra (see docs/cuda.md)")
    if u.device.type != kernels.device_type:
        raise RuntimeError("the cuda scan backend needs CUDA tensors; got device " + str(u.device))
    return kernels.selective_scan_fn(u, delta, A, B, C, D, z, delta_bias, delta_softplus)


_IMPLS = {"ref": selective_scan_ref, "fast": selective_scan_fast, "native": selective_scan_native,
          "chunked": selective_scan_chunked, "cuda": selective_scan_cuda}


# On a GPU without mamba-ssm the per-step loop wins for short sequences (H200, roma_base at 192 px,
# L = 128, batch 64: fast 449 vs chunked 190 images/s) and loses to chunking for long ones.
CHUNKED_MIN_LENGTH = 1024


def _kernels_run_on(device: torch.device) -> bool:
    kernels = mamba_ssm_kernels() if device.type in ("cuda", "cpu") else None
    return kernels is not None and kernels.device_type == device.type


def resolve_backend(device: torch.device, forced: str | None = None, length: int = 0) -> str:
    """The backend name for tensors on `device` (ROMA_SCAN or `forced` overrides)."""
    name = forced or os.environ.get("ROMA_SCAN", "").strip().lower() or None
    if name is not None:
        if name not in BACKENDS:
            raise ValueError(f"ROMA_SCAN={name!r} is not a scan backend; choose one of {BACKENDS}")
        if name == "cuda" and not _kernels_run_on(device):
            why = "mamba-ssm is not importable" if mamba_ssm_kernels() is None else "tensors are on " + device.type
            raise RuntimeError(f"scan backend 'cuda' was forced but is unavailable: {why}")
        if name == "native" and device.type != "cpu":
            raise RuntimeError(f"scan backend 'native' runs on CPU tensors only, got {device.type}")
        return name
    if _kernels_run_on(device):
        return "cuda"
    if device.type == "cuda":
        return "chunked" if length > CHUNKED_MIN_LENGTH else "fast"
    return "native" if native_scan.available() else "fast"


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, backend=None):
    """Dispatch to the selected backend; see the module docstring for shapes."""
    return _IMPLS[resolve_backend(u.device, backend, u.shape[-1])](u, delta, A, B, C, D, z, delta_bias,
                                                                    delta_softplus)


def causal_conv1d(x, weight, bias, backend: str | None = None):
    """Depthwise causal conv + SiLU. x: (B, D, L); weight: (D, 1, K); bias: (D,)."""
    if resolve_backend(x.device, backend) == "cuda":
        conv = mamba_ssm_kernels().causal_conv1d_fn
        if conv is not None:
            return conv(x, weight.squeeze(1), bias, activation="silu")
    k = weight.shape[-1]
    return F.silu(F.conv1d(x, weight, bias, padding=k - 1, groups=x.shape[1])[..., : x.shape[-1]])
