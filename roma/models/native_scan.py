"""The selective scan's recurrences compiled from C (scan_kernel.c): the CPU training scan.

    lib = native_scan.library()          # None when no C compiler works here (then the PyTorch scan runs)
    y = NativeScan.apply(dt, u, A, Bm, Cm)  # same contract as scan._ScanCore

Why C: on a CPU the PyTorch scan (scan._ScanCore) is a series of ~20 whole-tensor passes over
(L, B, N, D) states plus L tiny in-place kernels; in C each step's (N, D) slice is updated, reduced
and differentiated while it sits in cache, so the scan costs about one pass over its inputs and
outputs. The exponentials a_t = exp(dt_t A) stay in PyTorch (one vectorised pass, saved for the
backward), so there is no libm dependency and the math matches the PyTorch scan to fp32 round-off.

Build: the system C compiler (`$CC`, else cc / gcc / clang) compiles scan_kernel.c once per machine
into cache_dir("kernels")/scan-<hash>.so (-O3 -march=native; the hash covers the source, the
compiler, the flags and this CPU's model and flags, so a cache shared across cluster nodes never
loads a library built for another CPU), written atomically; ctypes loads it. ctypes releases the
GIL during a call, so the batch rows are split over torch.get_num_threads() Python threads.
ROMA_SCAN=fast skips it; ROMA_SCAN=native insists on it.
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from roma import atomic
from roma.cache import cache_dir

SOURCE = Path(__file__).with_name("scan_kernel.c")
FLAGS = ("-O3", "-march=native", "-fopenmp-simd", "-ffp-contract=off", "-std=c99", "-shared", "-fPIC")
PORTABLE_FLAGS = ("-O3", "-fopenmp-simd", "-ffp-contract=off", "-std=c99", "-shared", "-fPIC")  # no -march=native


def _compiler() -> str | None:
    for cc in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if cc and shutil.which(cc):
            return shutil.which(cc)
    return None


def _cpu_signature() -> str:
    """The CPU model and feature flags: what -march=native compiles for."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return "\n".join(sorted({ln for ln in lines if ln.split(":")[0].strip() in ("model name", "flags", "Features")}))
    except OSError:
        return platform.processor() + platform.machine()


def _build(cc: str, flags: tuple[str, ...], out: Path) -> None:
    with atomic.replacing(out) as tmp:
        subprocess.run([cc, *flags, str(SOURCE), "-o", str(tmp)], check=True, capture_output=True, text=True)


@functools.lru_cache(maxsize=1)
def library() -> ctypes.CDLL | None:
    """The compiled kernel, built on first use; None (with one warning) when it cannot be built."""
    cc = _compiler()
    if cc is None:
        warnings.warn("no C compiler found (set CC): the CPU scan falls back to its slower PyTorch version",
                      stacklevel=2)
        return None
    if not SOURCE.is_file():
        warnings.warn(f"{SOURCE} is missing from this install: the CPU scan falls back to its slower PyTorch "
                      "version", stacklevel=2)
        return None
    errors = []
    for flags in (FLAGS, PORTABLE_FLAGS):
        key = hashlib.sha256("\0".join([SOURCE.read_text(), cc, *flags, _cpu_signature()]).encode()).hexdigest()[:16]
        path = cache_dir("kernels") / f"scan-{key}.so"
        try:
            if not path.is_file():
                _build(cc, flags, path)
            lib = ctypes.CDLL(str(path))
        except (OSError, subprocess.CalledProcessError) as err:
            errors.append(getattr(err, "stderr", None) or str(err))
            continue
        lib.roma_scan_forward.argtypes = [ctypes.c_void_p] * 6 + [ctypes.c_long] * 6
        lib.roma_scan_backward.argtypes = [ctypes.c_void_p] * 15 + [ctypes.c_long] * 6
        lib.roma_scan_forward.restype = lib.roma_scan_backward.restype = None
        return lib
    warnings.warn(f"{cc} could not build {SOURCE.name} ({errors[-1].strip()[:300]}): the CPU scan falls back "
                  "to its slower PyTorch version", stacklevel=2)
    return None


def available() -> bool:
    return library() is not None


@functools.lru_cache(maxsize=1)
def _pool(pid: int, workers: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="roma-scan")  # one per process (fork)


def _over_batch(fn, batch: int, *args) -> None:
    """fn(*args, b0, b1) over the batch rows, split across torch's intra-op thread count."""
    parts = max(1, min(torch.get_num_threads(), batch))
    if parts == 1:
        fn(*args, 0, batch)
        return
    bounds = [batch * i // parts for i in range(parts + 1)]
    pool = _pool(os.getpid(), parts)
    for f in [pool.submit(fn, *args, lo, hi) for lo, hi in zip(bounds, bounds[1:])]:
        f.result()


def _p(t: torch.Tensor) -> ctypes.c_void_p:
    if t.dtype != torch.float32 or not t.is_contiguous() or t.device.type != "cpu":
        raise ValueError(f"the native scan takes contiguous fp32 CPU tensors, got {t.dtype} {tuple(t.shape)} "
                         f"on {t.device} (contiguous: {t.is_contiguous()})")
    return ctypes.c_void_p(t.data_ptr())


class NativeScan(torch.autograd.Function):
    """y_t = <C_t, h_t>, h_t = exp(dt_t A) h_{t-1} + dt_t u_t B_t in C; fp32, time-major.

    dt, u: (L, B, D); A: (D, N); Bm, Cm: (L, B, N), all contiguous -> y: (L, B, D).
    Saved for the backward: the states H and the decays exp(dt A), (L, B, N, D) each.
    """

    @staticmethod
    def forward(ctx, dt, u, A, Bm, Cm):
        lib = library()
        L, B, D = dt.shape
        N = A.shape[1]
        At = A.t().contiguous()  # (N, D)
        dA = torch.mul(dt.unsqueeze(2), At, out=dt.new_empty(L, B, N, D)).exp_()  # (L, B, N, D), contiguous
        x = dt * u
        H, y = torch.empty_like(dA), torch.empty_like(dt)
        _over_batch(lib.roma_scan_forward, B, _p(dA), _p(x), _p(Bm), _p(Cm), _p(H), _p(y), L, B, N, D)
        ctx.save_for_backward(dt, u, x, At, Bm, Cm, H, dA)
        return y

    @staticmethod
    def backward(ctx, gy):
        lib = library()
        dt, u, x, At, Bm, Cm, H, dA = ctx.saved_tensors
        L, B, D = dt.shape
        N = At.shape[0]
        gy = gy.contiguous()
        gdt, gu = torch.empty_like(dt), torch.empty_like(dt)
        gB, gC = torch.empty_like(Bm), torch.empty_like(Cm)
        gA_rows, G = dt.new_zeros(B, N, D), dt.new_zeros(B, N, D)
        _over_batch(lib.roma_scan_backward, B, _p(gy), _p(dt), _p(u), _p(x), _p(At), _p(Bm), _p(Cm), _p(H),
                    _p(dA), _p(gdt), _p(gu), _p(gB), _p(gC), _p(gA_rows), _p(G), L, B, N, D)
        return gdt, gu, gA_rows.sum(0).t().contiguous(), gB, gC
