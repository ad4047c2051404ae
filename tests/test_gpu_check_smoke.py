"""benchmarks/gpu_check.py end to end in its CPU --smoke mode: the GPU session only measures."""
import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_smoke_runs_every_section_on_cpu(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "CUDA_VISIBLE_DEVICES": ""}
    env.pop("OUT", None)
    res = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--smoke", "--out", str(tmp_path),
                          "--wheels", str(tmp_path / "no-wheels")], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=1200)
    assert res.returncode == 0, res.stderr[-3000:]
    log = (tmp_path / "cpu_smoke" / "gpu_check.log").read_text()
    assert "Traceback" not in log, log[-3000:]
    for title in ("mamba-ssm kernels", "GPU-marked tests", "training step", "high resolution", "targets"):
        assert title in log
    rows = list(csv.DictReader(open(tmp_path / "cpu_smoke" / "throughput.csv")))
    # both micro models, the fused path (CPU stand-in) and the fast scan, with the same loss
    assert {(r["model"], r["scan"]) for r in rows} == {(m, s) for m in ("roma_micro_tiny", "roma_micro_small")
                                                       for s in ("cuda", "fast")}
    for m in ("roma_micro_tiny", "roma_micro_small"):
        losses = {r["loss"] for r in rows if r["model"] == m}
        assert len(losses) == 1, losses
    assert (tmp_path / "cpu_smoke" / "highres" / "results.csv").exists()
