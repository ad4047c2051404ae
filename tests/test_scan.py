"""The fast selective scans (PyTorch and C) against the sequential reference: outputs and every gradient."""
import platform

import pytest
import torch

from roma import allocator
from roma.models import native_scan, scan
from roma.models.scan import (resolve_backend, selective_scan, selective_scan_chunked, selective_scan_fast,
                              selective_scan_native, selective_scan_ref)

IMPLS = {"fast": selective_scan_fast, "native": selective_scan_native}


def _inputs(b, d, n, L, dt_bias_scale, seed=0, gate=True):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g)
    return dict(
        u=r(b, d, L), delta=r(b, d, L) * 0.5 - 3.0,
        A=-torch.arange(1, n + 1, dtype=torch.float32).repeat(d, 1) * (1 + 0.1 * r(d, n).abs()),
        B=r(b, n, L), C=r(b, n, L), D=r(d), z=r(b, d, L) if gate else None,
        delta_bias=r(d) * dt_bias_scale,
    )


def _run(fn, inputs):
    leaves = {k: v.clone().requires_grad_() for k, v in inputs.items() if v is not None}
    args = {**inputs, **leaves}
    y = fn(**args, delta_softplus=True)
    g = torch.Generator().manual_seed(123)
    (y * torch.randn(y.shape, generator=g).to(y.device)).sum().backward()
    return y.detach(), {k: v.grad for k, v in leaves.items()}


@pytest.mark.parametrize("L", [1, 2, 17, 33, 64])
@pytest.mark.parametrize("dt_bias_scale", [1.0, 100.0])  # 100: large dt, exp(dt A) underflows to 0
@pytest.mark.parametrize("gate", [True, False])
@pytest.mark.parametrize("impl", list(IMPLS))
def test_fast_matches_reference(L, dt_bias_scale, gate, impl):
    inputs = _inputs(3, 8, 4, L, dt_bias_scale, seed=L, gate=gate)
    y_ref, g_ref = _run(selective_scan_ref, inputs)
    y_fast, g_fast = _run(IMPLS[impl], inputs)
    assert torch.isfinite(y_fast).all()
    torch.testing.assert_close(y_fast, y_ref, rtol=1e-5, atol=1e-5 * y_ref.abs().max().item())
    for k in g_ref:
        scale = g_ref[k].abs().max().item() + 1e-12
        err = (g_fast[k] - g_ref[k]).abs().max().item() / scale
        assert err < 1e-5, f"gradient of {k}: relative error {err:.2e}"


@pytest.mark.parametrize("L", [1, 17, 64, 150])
@pytest.mark.parametrize("dt_bias_scale", [1.0, 100.0])
def test_chunked_matches_reference(L, dt_bias_scale):
    inputs = _inputs(2, 8, 4, L, dt_bias_scale, seed=L)
    y_ref, g_ref = _run(selective_scan_ref, inputs)
    y_chk, g_chk = _run(lambda **kw: selective_scan_chunked(**kw, chunk=32), inputs)
    torch.testing.assert_close(y_chk, y_ref, rtol=1e-4, atol=1e-5 * y_ref.abs().max().item())
    for k in g_ref:
        err = (g_chk[k] - g_ref[k]).abs().max().item() / (g_ref[k].abs().max().item() + 1e-12)
        assert err < 1e-4, f"gradient of {k}: relative error {err:.2e}"


@pytest.mark.parametrize("L", [1, 33])
def test_fast_inference_streaming_matches_reference(L):
    inputs = _inputs(2, 8, 4, L, 1.0, seed=L)
    with torch.no_grad():
        y_ref = selective_scan_ref(**inputs, delta_softplus=True)
        y_fast = selective_scan_fast(**inputs, delta_softplus=True)
    torch.testing.assert_close(y_fast, y_ref, rtol=1e-5, atol=1e-5 * y_ref.abs().max().item())


def test_chunked_inference_in_channel_slices_matches(monkeypatch):
    inputs = _inputs(2, 8, 4, 40, 1.0)
    whole = selective_scan_chunked(**inputs, delta_softplus=True)
    monkeypatch.setattr(scan, "INFERENCE_SLICE_ELEMENTS", 2 * 40 * 4 * 3)  # 3 channels per slice
    with torch.no_grad():
        sliced = selective_scan_chunked(**inputs, delta_softplus=True)
    torch.testing.assert_close(sliced, whole)


def test_reference_matches_float64_sequential():
    inputs = _inputs(1, 3, 2, 9, 1.0)
    y = selective_scan_ref(**inputs, delta_softplus=True).double()
    x = {k: v.double() for k, v in inputs.items()}
    dt = torch.nn.functional.softplus(x["delta"] + x["delta_bias"][:, None])
    h = torch.zeros(1, 3, 2, dtype=torch.float64)
    ys = []
    for t in range(9):
        h = torch.exp(dt[..., t, None] * x["A"]) * h + (dt[..., t] * x["u"][..., t])[..., None] * x["B"][:, None, :, t]
        ys.append((h * x["C"][:, None, :, t]).sum(-1))
    expect = (torch.stack(ys, -1) + x["u"] * x["D"][:, None]) * torch.nn.functional.silu(x["z"])
    torch.testing.assert_close(y, expect, rtol=1e-5, atol=1e-6)


def test_gradcheck_fast_float64():
    inputs = _inputs(1, 3, 2, 6, 1.0)
    leaves = [inputs[k].double().requires_grad_() for k in ("u", "delta", "A", "B", "C")]
    # float64 inputs stay float64 inside the fast scan, so the hand-written backward can be gradchecked
    fn = lambda u, delta, A, B, C: selective_scan_fast(u, delta, A, B, C, delta_softplus=True)
    assert torch.autograd.gradcheck(fn, leaves)


def test_native_scan_builds_where_a_compiler_exists():
    """CI and the dev machines have gcc: the C scan must build there, not silently fall back."""
    if native_scan._compiler() is None:
        pytest.skip("no C compiler on this machine")
    assert native_scan.available()
    assert resolve_backend(torch.device("cpu")) in ("native", "ref", "fast", "chunked")  # ROMA_SCAN may force one


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_native_scan_same_result_over_any_thread_split(threads):
    """The batch rows are split over threads; every row is computed the same way, so bits agree."""
    inputs = _inputs(5, 8, 4, 40, 1.0, seed=3)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        y1, g1 = _run(selective_scan_native, inputs)
        torch.set_num_threads(threads)
        yn, gn = _run(selective_scan_native, inputs)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(y1, yn) and all(torch.equal(g1[k], gn[k]) for k in g1)


def test_native_scan_falls_back_without_a_compiler(monkeypatch, tmp_path):
    monkeypatch.setenv("ROMA_CACHE", str(tmp_path))  # nothing built here yet
    monkeypatch.delenv("ROMA_SCAN", raising=False)
    monkeypatch.setattr(native_scan, "_compiler", lambda: None)
    native_scan.library.cache_clear()
    try:
        with pytest.warns(UserWarning, match="no C compiler"):
            assert resolve_backend(torch.device("cpu")) == "fast"
        monkeypatch.setenv("ROMA_SCAN", "native")
        with pytest.raises(RuntimeError, match="C scan could not be built"):
            selective_scan(**_inputs(1, 2, 2, 3, 1.0))
    finally:
        native_scan.library.cache_clear()


def test_native_scan_falls_back_when_the_build_fails(monkeypatch, tmp_path):
    monkeypatch.setenv("ROMA_CACHE", str(tmp_path))
    monkeypatch.setattr(native_scan, "_compiler", lambda: "/bin/false")  # a "compiler" that always fails
    native_scan.library.cache_clear()
    try:
        with pytest.warns(UserWarning, match="could not build scan_kernel.c"):
            assert native_scan.library() is None
        assert not list((tmp_path / "kernels").glob("*.so"))  # no half-written library left behind
    finally:
        native_scan.library.cache_clear()


def test_allocator_keeps_freed_memory_on_glibc():
    expected = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
    assert allocator.keep_freed_memory() is expected


def test_backend_selection(monkeypatch):
    monkeypatch.delenv("ROMA_SCAN", raising=False)
    assert resolve_backend(torch.device("cpu")) == ("native" if native_scan.available() else "fast")
    monkeypatch.setattr(scan, "mamba_ssm_kernels", lambda: None)
    assert resolve_backend(torch.device("cuda"), length=128) == "fast"
    assert resolve_backend(torch.device("cuda"), length=6084) == "chunked"
    monkeypatch.setenv("ROMA_SCAN", "ref")
    assert resolve_backend(torch.device("cpu")) == "ref"
    monkeypatch.setenv("ROMA_SCAN", "bogus")
    with pytest.raises(ValueError, match="ROMA_SCAN='bogus'"):
        resolve_backend(torch.device("cpu"))
    monkeypatch.setenv("ROMA_SCAN", "cuda")
    with pytest.raises(RuntimeError, match="forced but is unavailable"):
        selective_scan(**_inputs(1, 2, 2, 3, 1.0))


def test_cuda_backend_reports_missing_mamba_ssm(monkeypatch):
    monkeypatch.setattr(scan, "mamba_ssm_kernels", lambda: None)
    with pytest.raises(RuntimeError, match="mamba-ssm is not importable"):
        scan.selective_scan_cuda(**_inputs(1, 2, 2, 3, 1.0))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_pytorch_scans_on_cuda_match_reference():
    inputs = {k: (v.cuda() if v is not None else None) for k, v in _inputs(2, 16, 16, 64, 1.0).items()}
    y_ref, g_ref = _run(selective_scan_ref, inputs)
    for impl in (selective_scan_fast, selective_scan_chunked):
        y, g = _run(impl, inputs)
        torch.testing.assert_close(y, y_ref, rtol=1e-4, atol=1e-4)
        for k in g_ref:
            torch.testing.assert_close(g[k], g_ref[k], rtol=1e-4, atol=1e-4 * g_ref[k].abs().max().item())
