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
        {"model": "roma_base_uni", "resolution": 1248, "batch": 1, "dtype": "bfloat16", "scan": "chunked",
         "status": "ok", "peak_mem_mb": 5000.0, "samples_per_s": 12.0},
        {"model": "vit_b", "resolution": 2048, "batch": 1, "dtype": "bfloat16", "scan": "none", "status": "OOM",
         "peak_mem_mb": float("nan"), "samples_per_s": float("nan")},
    ]
    table = highres.format_table(rows).splitlines()
    assert table[0].startswith("| model | scan | px |") and len(table) == 4
    assert "| roma_base_uni | chunked | 1248 | 1 | bfloat16 | 5000 | 12 | 6526 | 11.43 |" == table[2]
    assert table[3] == "| vit_b | none | 2048 | 1 | bfloat16 | OOM | OOM | OOM | OOM |"


def test_each_row_names_the_scan_roma_ran_with(monkeypatch):
    from roma.models import scan

    monkeypatch.delenv("ROMA_SCAN", raising=False)
    assert highres.scan_used("vit_b", 1248, "cpu") == highres.NO_SCAN
    assert highres.scan_used("roma_base_uni", 224, "cpu") == scan.resolve_backend(__import__("torch").device("cpu"))
    monkeypatch.setenv("ROMA_SCAN", "ref")
    row = highres.measure("roma_base_uni", 32, 1, "cpu", warmup=0, iters=1)
    assert row["scan"] == "ref" and set(row) == set(highres.COLUMNS)


def test_a_committed_table_is_replotted_and_one_without_its_scan_refused(tmp_path, capsys):
    import shutil

    committed = Path(__file__).resolve().parents[1] / "benchmarks/results/h200/highres/results.csv"
    shutil.copy(committed, tmp_path / "results.csv")
    rows = highres.main(["--replot", str(tmp_path)])
    out = capsys.readouterr().out
    assert len(rows) == 12 and {r["scan"] for r in rows} == {"chunked", "none"}  # the H200 run had no mamba-ssm
    assert "| roma_base_uni | chunked | 4096 |" in out
    assert (tmp_path / "highres.png").stat().st_size > 0 and (tmp_path / "highres.pdf").is_file()
    (tmp_path / "old").mkdir()
    import pandas as pd

    pd.read_csv(committed).drop(columns="scan").to_csv(tmp_path / "old" / "results.csv", index=False)
    with pytest.raises(SystemExit, match="no column.*scan.*does not say which selective scan"):
        highres.main(["--replot", str(tmp_path / "old")])


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
