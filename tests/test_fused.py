"""The fused mamba-ssm path (mamba_inner_fn): dispatch, parameter plumbing, kernel loading.

On CPU a stand-in kernel set computes mamba_inner_fn's contract in plain PyTorch
(fused.mamba_inner_ref over the sequential reference scan), so the plumbing of the mixer's
parameters into the fused call is checked against the unfused module, outputs and every
gradient, for one direction and for v3. The `gpu` tests run the real kernels against our `fast`
scan in fp32 and bf16.
"""
import math
import sys
import textwrap

import pytest
import torch

from roma.models import fused, scan
from roma.models.encoder import RoMAEncoder, column_major_perm
from roma.models.mamba import Mamba, expand_to_v3


class _Counted:
    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.fn(*args, **kwargs)


@pytest.fixture
def cpu_kernels(monkeypatch):
    """mamba-ssm's entry points replaced by PyTorch code that runs on CPU tensors."""
    conv = lambda x, w, b, activation=None: scan.causal_conv1d(x, w.unsqueeze(1), b, backend="fast")
    k = scan.Kernels(_Counted(scan.selective_scan_ref), conv, _Counted(fused.mamba_inner_ref), "cpu")
    monkeypatch.setattr(scan, "mamba_ssm_kernels", lambda: k)
    monkeypatch.delenv("ROMA_SCAN", raising=False)
    return k


def _grads(module, inputs, fn):
    """fn's output and the gradients of a random projection of it (parameters and inputs)."""
    module.zero_grad(set_to_none=True)
    leaves = [t.clone().requires_grad_() for t in inputs]
    out = fn(*leaves)
    g = torch.Generator().manual_seed(1)
    (out.float() * torch.randn(out.shape, generator=g).to(out.device)).sum().backward()
    grads = {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}
    grads.update({f"input{i}": t.grad for i, t in enumerate(leaves)})
    return out.detach(), grads


def _assert_same(a, b, tol=1e-5):
    out_a, g_a = a
    out_b, g_b = b
    torch.testing.assert_close(out_a, out_b, rtol=tol, atol=tol * out_b.abs().max().item())
    assert set(g_a) == set(g_b)
    for k in g_b:
        err = (g_a[k] - g_b[k]).abs().max().item() / (g_b[k].abs().max().item() + 1e-12)
        assert err < tol * 10, f"gradient of {k}: relative error {err:.2e}"


def _mixer(directions):
    torch.manual_seed(0)
    m = Mamba(16, d_state=4, directions=directions)
    with torch.no_grad():  # non-trivial conv bias / D so that a dropped argument shows
        for name, p in m.named_parameters():
            if "conv1d" in name and name.endswith("bias") or name.startswith("D"):
                p.add_(torch.randn_like(p) * 0.3)
    return m


@pytest.mark.parametrize("directions", [1, 4])
def test_fused_mixer_matches_unfused(cpu_kernels, monkeypatch, directions, one_thread):
    m = _mixer(directions)
    gh = gw = 3
    hidden = torch.randn(2, gh * gw, 16)
    perm = column_major_perm(gh, gw) if directions == 4 else None
    fused_run = _grads(m, [hidden], lambda h: m(h, perm))
    assert cpu_kernels.mamba_inner_fn.calls == directions  # one fused call per direction
    monkeypatch.setenv("ROMA_SCAN", "fast")
    unfused_run = _grads(m, [hidden], lambda h: m(h, perm))
    assert cpu_kernels.mamba_inner_fn.calls == directions  # forcing `fast` bypasses the kernel
    _assert_same(fused_run, unfused_run)


def test_fused_v3_encoder_matches_unfused_and_loads_uni_weights(cpu_kernels, monkeypatch, one_thread):
    torch.manual_seed(0)
    uni = RoMAEncoder(32, 2, img_size=32, patch_size=8, cluster_size=2)
    v3 = RoMAEncoder(32, 2, img_size=32, patch_size=8, cluster_size=2, directions=4)
    v3.load_state_dict(expand_to_v3(uni.state_dict()))  # the same keys whichever path runs
    x = torch.randn(2, 3, 32, 32)
    fused_v3, fused_uni = _grads(v3, [x], v3.forward_tokens), _grads(uni, [x], uni.forward_tokens)
    assert cpu_kernels.mamba_inner_fn.calls == 2 * 4 + 2
    monkeypatch.setenv("ROMA_SCAN", "fast")
    _assert_same(fused_v3, _grads(v3, [x], v3.forward_tokens))
    _assert_same(fused_uni, _grads(uni, [x], uni.forward_tokens))


def test_fused_pretraining_taps_match_unfused(cpu_kernels, monkeypatch, one_thread):
    torch.manual_seed(0)
    enc = RoMAEncoder(32, 2, img_size=32, patch_size=8, cluster_size=2, n_taps=1)
    x = torch.randn(2, 3, 32, 32)
    run = lambda img: enc.forward_taps(img, n_clusters=3)[-1]
    fused_run = _grads(enc, [x], run)
    monkeypatch.setenv("ROMA_SCAN", "ref")
    _assert_same(fused_run, _grads(enc, [x], run))


def test_without_causal_conv1d_the_unfused_module_uses_the_scan_kernel(monkeypatch, one_thread):
    k = scan.Kernels(_Counted(scan.selective_scan_ref), None, None, "cpu")
    monkeypatch.setattr(scan, "mamba_ssm_kernels", lambda: k)
    monkeypatch.delenv("ROMA_SCAN", raising=False)
    m = _mixer(1)
    hidden = torch.randn(2, 5, 16)
    out = m(hidden)
    assert k.selective_scan_fn.calls == 1
    monkeypatch.setenv("ROMA_SCAN", "fast")
    torch.testing.assert_close(out, m(hidden), rtol=1e-5, atol=1e-6)


def test_dispatch_without_kernels(monkeypatch):
    monkeypatch.setattr(scan, "mamba_ssm_kernels", lambda: None)
    monkeypatch.delenv("ROMA_SCAN", raising=False)
    assert fused.fused_kernel(torch.device("cpu"), 10) is None
    monkeypatch.setenv("ROMA_SCAN", "cuda")
    with pytest.raises(RuntimeError, match="mamba-ssm is not importable"):
        Mamba(16, d_state=4)(torch.randn(1, 3, 16))


def test_real_kernels_only_claim_cuda_tensors(monkeypatch):
    k = scan.Kernels(scan.selective_scan_ref, None, fused.mamba_inner_ref)  # device_type "cuda"
    monkeypatch.setattr(scan, "mamba_ssm_kernels", lambda: k)
    monkeypatch.delenv("ROMA_SCAN", raising=False)
    assert scan.resolve_backend(torch.device("cpu")) in ("fast", "native")  # the CPU scans, not "cuda"
    assert fused.fused_kernel(torch.device("cpu"), 10) is None
    monkeypatch.setenv("ROMA_SCAN", "cuda")
    with pytest.raises(RuntimeError, match="tensors are on cpu"):
        scan.resolve_backend(torch.device("cpu"))


def test_mamba_inner_ref_rejects_misplumbed_weights():
    m = _mixer(1)
    xz = torch.randn(1, 32, 5)
    A = -torch.exp(m.A_log)
    with pytest.raises(ValueError, match="inconsistent shapes"):  # x_proj and dt_proj swapped
        fused.mamba_inner_ref(xz, m.conv1d.weight, m.conv1d.bias, m.dt_proj.weight, m.x_proj.weight,
                              m.out_proj.weight, None, A, D=m.D, delta_bias=m.dt_proj.bias)


# ----------------------------------------------------------------------------- kernel loading
def _fake_install(root, init_body: str, interface_body: str):
    pkg = root / "mamba_ssm"
    (pkg / "ops").mkdir(parents=True)
    (pkg / "__init__.py").write_text(textwrap.dedent(init_body))
    (pkg / "ops" / "__init__.py").write_text("")
    (pkg / "ops" / "selective_scan_interface.py").write_text(textwrap.dedent(interface_body))
    (root / "causal_conv1d").mkdir()
    (root / "causal_conv1d" / "__init__.py").write_text("def causal_conv1d_fn(*a, **k):\n    return 'conv'\n")


@pytest.fixture
def clean_imports(monkeypatch, tmp_path):
    saved = {k: v for k, v in sys.modules.items() if k.split(".")[0] in ("mamba_ssm", "causal_conv1d")}
    for k in saved:
        del sys.modules[k]
    monkeypatch.syspath_prepend(str(tmp_path))
    scan.mamba_ssm_kernels.cache_clear()
    yield tmp_path
    for k in [k for k in sys.modules if k.split(".")[0] in ("mamba_ssm", "causal_conv1d")]:
        del sys.modules[k]
    sys.modules.update(saved)
    scan.mamba_ssm_kernels.cache_clear()


INTERFACE = """
def selective_scan_fn(*a, **k):
    return 'scan'
def mamba_inner_fn(*a, **k):
    return 'inner'
"""


def test_kernels_load_when_the_package_init_needs_missing_extras(clean_imports):
    # mamba_ssm/__init__ imports its LM models (transformers, tilelang...): absent on an offline node
    _fake_install(clean_imports, "import transformers_not_installed_here\n", INTERFACE)
    k = scan.mamba_ssm_kernels()
    assert k is not None and k.device_type == "cuda"
    assert (k.selective_scan_fn(), k.mamba_inner_fn(), k.causal_conv1d_fn()) == ("scan", "inner", "conv")


def test_kernels_unavailable_without_the_compiled_scan(clean_imports):
    _fake_install(clean_imports, "", "import selective_scan_cuda\n" + INTERFACE)
    assert scan.mamba_ssm_kernels() is None


# ----------------------------------------------------------------------------- GPU: the real kernels
def _cuda_kernels():
    return torch.cuda.is_available() and scan.mamba_ssm_kernels() is not None \
        and scan.mamba_ssm_kernels().mamba_inner_fn is not None


# Tolerances, as relative errors ||a - b|| / ||b|| over a whole tensor. fp32: the kernel and our
# scan differ only in summation order and the kernel's --use_fast_math exp, so 1e-4 for outputs
# and 1e-3 for gradients (reductions over batch and length). bf16 autocast: both paths round
# their projections to bf16 at different points, so each is compared with the fp32 result of
# the fast scan, and the fused path must be within 2x the fast path's own bf16 error (or 1e-2).
FP32_OUT, FP32_GRAD, BF16_FLOOR = 1e-4, 1e-3, 1e-2


def _rel(a, b):
    return ((a.float() - b.float()).norm() / (b.float().norm() + 1e-30)).item()


def _encoder_run(enc, fn, x, backend, dtype, monkeypatch):
    monkeypatch.setenv("ROMA_SCAN", backend)
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
        return _grads(enc, [x], fn)


@pytest.mark.gpu
@pytest.mark.skipif(not _cuda_kernels(), reason="needs a CUDA GPU with mamba-ssm and causal-conv1d")
@pytest.mark.parametrize("directions", [1, 4])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_fused_kernel_matches_fast_scan_on_gpu(directions, dtype, monkeypatch):
    # fp32 means fp32: no TF32 in cuDNN's depthwise conv (unfused path) or in matmuls
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    torch.manual_seed(0)
    enc = RoMAEncoder(192, 2, img_size=192, patch_size=16, cluster_size=4, directions=directions).cuda()
    # uni: the pretraining path (cluster order, taps); v3: the downstream path (raster, 4 scans)
    fn = enc.forward_tokens if directions == 4 else (lambda img: enc.forward_taps(img)[-1])
    x = torch.randn(4, 3, 192, 192, device="cuda")
    fast32 = _encoder_run(enc, fn, x, "fast", torch.float32, monkeypatch)
    fused_run = _encoder_run(enc, fn, x, "cuda", dtype, monkeypatch)
    if dtype == torch.float32:
        assert _rel(fused_run[0], fast32[0]) < FP32_OUT
        for k, g in fast32[1].items():
            assert _rel(fused_run[1][k], g) < FP32_GRAD, k
        return
    fast16 = _encoder_run(enc, fn, x, "fast", dtype, monkeypatch)
    bound = lambda e: max(2 * e, BF16_FLOOR)
    assert _rel(fused_run[0], fast32[0]) < bound(_rel(fast16[0], fast32[0]))
    for k, g in fast32[1].items():
        assert _rel(fused_run[1][k], g) < bound(_rel(fast16[1][k], g)), k


@pytest.mark.gpu
@pytest.mark.skipif(not _cuda_kernels(), reason="needs a CUDA GPU with mamba-ssm and causal-conv1d")
def test_real_mamba_inner_fn_matches_its_contract(monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    torch.manual_seed(0)
    m = _mixer(1).cuda()
    hidden = torch.randn(2, 64, 16, device="cuda")
    xz = (m.in_proj.weight @ hidden.reshape(-1, 16).t()).reshape(32, 2, 64).permute(1, 0, 2)
    args = (m.conv1d.weight, m.conv1d.bias, m.x_proj.weight, m.dt_proj.weight, m.out_proj.weight, None,
            -torch.exp(m.A_log.float()), None, None, m.D.float(), m.dt_proj.bias.float())
    out = scan.mamba_ssm_kernels().mamba_inner_fn(xz.contiguous(), *args, delta_softplus=True)
    ref = fused.mamba_inner_ref(xz.contiguous(), *args, delta_softplus=True)
    assert _rel(out, ref) < FP32_OUT and math.isfinite(out.sum().item())
