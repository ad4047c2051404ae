"""benchmarks/gpu_check.py's bookkeeping on CPU: rows for the planning table and merging them in."""
import csv
import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("gpu_check", REPO / "benchmarks" / "gpu_check.py")
gc = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gc)
from benchmarks import device_kernels as dk  # noqa: E402 - gpu_check put the repository on the path

TABLE = """# a comment the table keeps
model,img_size,gpu_type,images_per_s,gflops,basis,scaled_from,factor,source
roma_base,192,h200,438.0,28.1329,measured,,,"old measurement, fast scan"
roma_tiny,192,h200,1604.4,7.68,scaled,roma_base@192/h200,3.6631,"FLOPs ratio"
roma_tiny,192,h100,1444.0,7.68,scaled,roma_tiny@192/h200,0.9,"0.9 x H200"
roma_base,192,a100,175.2,28.1329,scaled,roma_base@192/h200,0.4,"0.4 x H200"
"""


def _result(model, scan, ips, counted="registry.pretrain_flops: encoder + decoder forward"):
    return {"model": model, "img_size": 192, "batch": 64, "dtype": "bfloat16", "scan": scan, "gpu": "NVIDIA H200",
            "images_per_s": ips, "peak_mem_gib": 9.0, "train_gflops_per_image": 84.3987, "flops_counted": counted,
            "mfu": 0.1, "loss": 1.0, "torch": "2.11.0+cu130", "date": "2026-12-03"}


def test_table_rows_prefer_the_fused_path(tmp_path):
    out = tmp_path / "h200"
    rows = gc.table_rows([_result("roma_base", "cuda", 1600.0), _result("roma_base", "fast", 440.0),
                          _result("roma_large", "fast", 150.0, counted="registry.encoder_flops: ...")], out)
    assert [(r["model"], r["images_per_s"], r["gpu_type"]) for r in rows] == [("roma_base", 1600.0, "h200"),
                                                                            ("roma_large", 150.0, "h200")]
    assert rows[0]["gflops"] == round(84.3987 / 3, 4) and rows[1]["gflops"] == ""  # only pretraining FLOPs go in
    assert "scan=cuda" in rows[0]["source"] and "data excluded" in rows[0]["source"]
    assert all(r["basis"] == "measured" and set(r) == set(gc.COLUMNS) for r in rows)


def test_merge_replaces_the_measurement_and_rescales_what_depends_on_it(tmp_path):
    table = tmp_path / "throughput.csv"
    table.write_text(TABLE)
    rows_csv = tmp_path / "rows.csv"
    new = gc.table_rows([_result("roma_base", "cuda", 1600.0), _result("roma_large", "cuda", 500.0)], tmp_path / "h200")
    with open(rows_csv, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=gc.COLUMNS)
        w.writeheader()
        w.writerows(new)
    gc.main(["--merge-rows", str(rows_csv), "--table", str(table)])
    text = table.read_text()
    assert text.startswith("# a comment the table keeps\n")
    got = {(r["model"], r["gpu_type"]): r for r in csv.DictReader(ln for ln in text.splitlines() if not ln.startswith("#"))}
    assert got[("roma_base", "h200")]["images_per_s"] == "1600.0" and "scan=cuda" in got[("roma_base", "h200")]["source"]
    assert got[("roma_large", "h200")]["basis"] == "measured"  # a new row
    assert float(got[("roma_tiny", "h200")]["images_per_s"]) == round(3.6631 * 1600, 1)
    assert float(got[("roma_tiny", "h100")]["images_per_s"]) == round(0.9 * round(3.6631 * 1600, 1), 1)  # chained
    assert float(got[("roma_base", "a100")]["images_per_s"]) == 640.0


# ----------------------------------------------------------------------------- carried wheels
def test_wheel_install_is_offline_without_deps_into_a_target(tmp_path):
    wheels = [tmp_path / "causal_conv1d-1.7.0-cp312-cp312-linux_x86_64.whl",
              tmp_path / "mamba_ssm-2.3.2.post1-cp312-cp312-linux_x86_64.whl"]
    cmd = dk.wheel_install_command(wheels, tmp_path / "site")
    assert cmd[1:4] == ["-m", "pip", "install"]
    i = cmd.index("--target")
    assert {"--no-index", "--no-deps"} <= set(cmd) and cmd[i + 1] == str(tmp_path / "site")
    assert cmd[-2:] == [str(w) for w in wheels]
    try:
        dk.wheel_install_command([tmp_path / "mamba_ssm-2.3.2.post1.tar.gz"], tmp_path / "site")
    except ValueError:
        pass
    else:
        raise AssertionError("an sdist must never reach pip (it would compile)")


def _fake_gpu(monkeypatch, imports_after_install: bool):
    """A CUDA machine as ensure_kernels sees it; every subprocess is recorded, none runs."""
    import torch

    from roma.models import scan

    calls, state = [], {"installed": False}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(dk.subprocess, "run", lambda cmd, **kw: calls.append(cmd) or state.update(
        installed="install" in cmd) or type("R", (), {"returncode": 0})())
    kernels = scan.Kernels(None, None, object(), "cuda")
    monkeypatch.setattr(dk, "_kernels_now", lambda: kernels if state["installed"] and imports_after_install else None)
    monkeypatch.setattr(dk, "_kernel_versions", lambda: "mamba-ssm 2.3.2.post1: mamba_inner_fn (fused path on)")
    monkeypatch.setattr(dk, "_print_import_error", lambda: print("  import selective_scan_cuda: ImportError: test"))
    monkeypatch.setattr(dk.sys, "path", list(dk.sys.path))
    monkeypatch.setenv("PYTHONPATH", "")
    return calls


def _carried(tmp_path, with_sdists=True):
    wheel_dir = tmp_path / ".whl"
    (wheel_dir / "src").mkdir(parents=True)
    for name in ("causal_conv1d-1.7.0-cp312-cp312-linux_x86_64.whl", "mamba_ssm-2.3.2.post1-cp312-cp312-linux_x86_64.whl"):
        (wheel_dir / name).write_text("")
    if with_sdists:
        for name in ("causal_conv1d-1.7.0.tar.gz", "mamba_ssm-2.3.2.post1.tar.gz"):
            (wheel_dir / "src" / name).write_text("")
    return wheel_dir


def test_carried_wheels_are_installed_into_a_target_on_the_path(tmp_path, monkeypatch, capsys):
    calls = _fake_gpu(monkeypatch, imports_after_install=True)
    wheel_dir = _carried(tmp_path)
    dk.ensure_kernels(wheel_dir, tmp_path / "out", smoke=False)
    assert len(calls) == 1 and "--target" in calls[0] and "--no-index" in calls[0] and "--no-deps" in calls[0]
    assert dk.sys.path[0] == str(wheel_dir / "site") and str(wheel_dir / "site") in dk.os.environ["PYTHONPATH"]
    assert "fused path on" in capsys.readouterr().out


def test_carried_wheels_that_fail_to_import_are_never_rebuilt_on_the_gpu(tmp_path, monkeypatch, capsys):
    calls = _fake_gpu(monkeypatch, imports_after_install=False)
    dk.ensure_kernels(_carried(tmp_path, with_sdists=True), tmp_path / "out", smoke=False)
    assert len(calls) == 1 and "install" in calls[0]  # no build_cuda_wheels.py build
    assert not any("build_cuda_wheels.py" in " ".join(map(str, c)) for c in calls)
    out = capsys.readouterr().out
    assert "not compiling on the GPU" in out and "ImportError: test" in out


def test_budget_fits_well_inside_eight_minutes():
    assert gc.DEFAULT_BUDGET_S + max(gc.PLANNED_S.values()) <= 7 * 60
    assert sum(gc.PLANNED_S.values()) <= 7 * 60
