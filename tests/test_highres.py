"""benchmarks/highres.py: OOM handling, table format, growth exponents, spec validation."""
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import highres  # noqa: E402


def test_simulated_oom_is_recorded_and_sweep_continues(monkeypatch):
    calls = []

    def fake_build(model, resolution):
        calls.append((model, resolution))
        if resolution == 64:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 96.00 GiB")
        net = torch.nn.Conv2d(3, 4, 16, stride=16)
        return net, net

    monkeypatch.setattr(highres, "build", fake_build)
    oom = highres.measure("roma_base_uni", 64, 1, "cpu", warmup=1, iters=1)
    ok = highres.measure("roma_base_uni", 32, 1, "cpu", warmup=1, iters=1)
    assert oom["status"] == "OOM" and oom["samples_per_s"] != oom["samples_per_s"]  # NaN
    assert ok["status"] == "ok" and ok["samples_per_s"] > 0
    assert calls == [("roma_base_uni", 64), ("roma_base_uni", 32)]


def test_host_memory_error_counts_as_oom(monkeypatch):
    monkeypatch.setattr(highres, "build", lambda m, r: (_ for _ in ()).throw(MemoryError()))
    assert highres.measure("vit_b", 32, 1, "cpu", 1, 1)["status"] == "OOM"


def test_other_errors_are_not_swallowed(monkeypatch):
    monkeypatch.setattr(highres, "build", lambda m, r: (_ for _ in ()).throw(ValueError("bad shape")))
    with pytest.raises(ValueError, match="bad shape"):
        highres.measure("vit_b", 32, 1, "cpu", 1, 1)


def test_table_format_has_paper_numbers_and_oom():
    rows = [
        {"model": "roma_base_uni", "resolution": 1248, "batch": 1, "dtype": "bfloat16", "status": "ok",
         "peak_mem_mb": 5000.0, "samples_per_s": 12.0},
        {"model": "vit_b", "resolution": 2048, "batch": 1, "dtype": "bfloat16", "status": "OOM",
         "peak_mem_mb": float("nan"), "samples_per_s": float("nan")},
    ]
    table = highres.format_table(rows).splitlines()
    assert table[0].startswith("| model | px |") and len(table) == 4
    assert "| roma_base_uni | 1248 | 1 | bfloat16 | 5000 | 12 | 6526 | 11.43 |" == table[2]
    assert table[3] == "| vit_b | 2048 | 1 | bfloat16 | OOM | OOM | OOM | OOM |"


def test_growth_exponents_linear_vs_quadratic():
    rows = []
    for res in (256, 512, 1024):
        n = (res / 16) ** 2
        rows.append({"model": "lin", "resolution": res, "status": "ok", "peak_mem_mb": 3 * n, "samples_per_s": 1e4 / n})
        rows.append({"model": "quad", "resolution": res, "status": "ok", "peak_mem_mb": n * n, "samples_per_s": 1e6 / n**2})
    exps = highres.growth_exponents(rows)
    assert exps["lin"]["time"] == pytest.approx(1.0) and exps["lin"]["memory"] == pytest.approx(1.0)
    assert exps["quad"]["time"] == pytest.approx(2.0) and exps["quad"]["memory"] == pytest.approx(2.0)


def test_spec_validation(tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text("resolutions: [224]\nmodel: [vit_b]\n")
    with pytest.raises(ValueError, match="unknown key.*'model'"):
        highres.load_spec(spec)
    spec.write_text("resolutions: [224]\nmodels: [vit_h]\n")
    with pytest.raises(ValueError, match="unknown.*vit_h"):
        highres.load_spec(spec)
    repo_spec = Path(__file__).resolve().parents[1] / "experiments/specs/highres_benchmark.yaml"
    assert set(highres.load_spec(repo_spec)["models"]) <= set(highres.MODELS)


def test_real_encoders_run_at_a_small_resolution():
    for model in ("roma_base_uni", "vit_b"):
        net, fwd = highres.build(model, 64)
        with torch.inference_mode():
            assert fwd(torch.randn(1, 3, 64, 64)).shape[-1] == 768
