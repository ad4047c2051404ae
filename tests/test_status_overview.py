"""`launch.py status SPEC`: per run state, step/total, images/s, ETA, losses, evaluation metrics;
the sweep's footer; no evaluation roots needed; the job's progress reports that feed it."""
from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone

import yaml

from roma.launch import cli
from roma.launch.job import JobHooks
from roma.launch.overview import footer, status_rows
from roma.launch.status import read_status, update_progress, write_status
from roma.spec import load_spec
from roma.train.batching import schedule


def _spec(tmp_path, evals: bool = False):
    (tmp_path / "imgs.txt").write_text("".join(f"a/{i}.jpg\n" for i in range(300)))
    body = {"base": "micro", "output_root": str(tmp_path / "out"), "grid": {"data.subset": [100, 200, 300]}}
    if evals:  # an evaluation whose root comes from a variable the test leaves unset
        body["eval"] = {"probes": [{"dataset": "aid", "root": "${ROMA_AID}"}]}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(body))
    return path, [str(path), "--data-root", str(tmp_path / "imgs.txt")]


def test_job_hooks_report_total_rate_eta_and_val_loss(tmp_path):
    d = tmp_path / "run"
    write_status(d, "running")
    hooks = JobHooks(d)
    hooks.on_start(10, {"total_steps": 110})
    hooks.rate.t0 -= 20.0  # 20 s ago, at step 10
    hooks.on_log(20, {"loss": 1.5, "images_per_s": 32.0})
    st = read_status(d)
    assert (st["step"], st["total_steps"], st["images_per_s"], st["loss"]) == (20, 110, 32.0, 1.5)
    assert abs(st["s_per_step"] - 2.0) < 0.1 and abs(st["eta_s"] - 180.0) < 10  # 90 steps at 2 s
    assert "val_loss" not in st
    hooks.on_log(30, {"loss": 1.25, "images_per_s": 30.0, "val_loss": 1.375})
    hooks.on_log(40, {"loss": 1.0, "images_per_s": 31.0})
    assert read_status(d)["val_loss"] == 1.375  # the last held-out loss stays until the next one
    import pytest

    with pytest.raises(ValueError, match="unknown facts"):
        update_progress(d, 1, 0.5, typo=1)


def test_status_rows_eta_and_footer(tmp_path):
    path, args = _spec(tmp_path)
    runs = load_spec(path, data_root=str(tmp_path / "imgs.txt")).runs
    a, b, c = runs
    now = datetime.now(timezone.utc)
    write_status(a.run_dir, "finished", step=60, total_steps=60, loss=0.75, val_loss=0.8125, s_per_step=2.0)
    (a.run_dir / "eval" / "probe_x").mkdir(parents=True)
    json.dump({"metrics": {"aid_oa_tr50": 41.25}}, open(a.run_dir / "eval" / "probe_x" / "results.json", "w"))
    write_status(b.run_dir, "running", step=30, total_steps=120, loss=1.0, images_per_s=16.0, s_per_step=2.0,
                 eta_s=180.0, executor="local")
    st = json.loads((b.run_dir / "status.json").read_text())  # the report was 60 s ago
    st["updated"] = (now - timedelta(seconds=60)).isoformat(timespec="seconds")
    (b.run_dir / "status.json").write_text(json.dumps(st))
    rows = status_rows(runs, {})
    ra, rb, rc = rows
    assert ra.eta_s == 0.0 and ra.metrics == {} and rb.state == "running"  # probe_x is not one of a's evaluations
    assert abs(rb.eta_s - 120.0) < 5  # 180 s at the report, 60 s ago
    assert rc.state == "new" and rc.total == schedule(c.train, 300).total_steps == 300  # planned
    assert rc.eta_s == rc.total * 2.0  # at the rate a run of the same model and batch measured
    cells = rb.cells()
    assert cells[3] == "30/120" and cells[4] == "16.0" and re.fullmatch(r"1m5\ds|2m0\ds", cells[5])
    text = footer(rows)
    assert text.startswith("total: 3 runs: 1 finished, 1 running, 1 new; ")
    assert f"{60 + 30:,}/{60 + 120 + rc.total:,} steps" in text
    assert "runs one after another" in text and re.search(r"ETA \d+m\d\ds", text) and "evaluations not counted" in text


def test_status_needs_no_evaluation_roots_and_shows_metrics(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("ROMA_AID", raising=False)
    path, args = _spec(tmp_path, evals=True)
    runs = load_spec(path, data_root=str(tmp_path / "imgs.txt"), dry_run=True).runs
    name = "probe_aid_fast_uni_mean"
    (runs[0].run_dir / "eval" / name).mkdir(parents=True)
    (runs[0].run_dir / "eval" / name / "results.json").write_text(
        json.dumps({"metrics": {"aid_oa_tr50": 41.78, "aid_oa_tr50_std": 0.52}}))
    write_status(runs[0].run_dir, "finished", step=9, total_steps=9, loss=0.5, val_loss=0.625)
    assert cli.main(["status", *args]) == 0
    out, err = capsys.readouterr()
    assert "ROMA_AID" in err and "status does not need it" in err and "nothing was launched" not in err
    row = next(line for line in out.splitlines() if line.startswith(runs[0].run_id))
    assert "finished" in row and "9/9" in row and "0.6250" in row and "aid_oa_tr50 41.78+-0.52" in row and "_std" not in row
    assert "total: 3 runs: 1 finished, 2 new" in out
