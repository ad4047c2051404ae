"""The quickstart without ../shared: it fetches UC Merced (here from a local server) and runs on its halves."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from fileserver import serve, sha256, ucm_like_zip

from roma.launch import cli

REPO = Path(__file__).resolve().parents[1]
ZIP = ucm_like_zip(per_class=8, size=32)  # 21 classes x 8: halves of 84 images


@pytest.fixture
def ucm_env(tmp_path, monkeypatch):
    monkeypatch.setenv("ROMA_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("ROMA_UCM", raising=False)
    monkeypatch.setenv("ROMA_PROGRESS", "plain")
    with serve({"ucm.zip": ZIP}) as srv:
        monkeypatch.setenv("ROMA_UCM_URL", srv.url("ucm.zip"))
        monkeypatch.setenv("ROMA_UCM_SHA256", sha256(ZIP))
        yield srv


def _spec(tmp_path: Path) -> Path:
    """The quickstart as if ../shared/data/AID were absent (its data root points nowhere)."""
    spec = tmp_path / "qs.yaml"
    spec.write_text(yaml.safe_dump({"base": str(REPO / "experiments" / "specs" / "quickstart.yaml"),
                                    "data.root": str(tmp_path / "no" / "AID"), "output_root": str(tmp_path / "out")}))
    return spec


FAKE = '''
import json, os
from roma.launch.status import run_dir
def record(cfg, hooks=None):
    with open(os.environ["FAKE_LOG"], "a") as fh:
        fh.write(json.dumps({"root": cfg.data.root, "subset": cfg.data.subset,
                             "probes": [[p.dataset, p.root] for p in cfg.eval.probes]}) + "\\n")
    return {"step": 1}
'''


def test_dry_run_fetches_nothing_then_launch_fetches_and_splits(ucm_env, tmp_path, monkeypatch, capsys):
    spec = _spec(tmp_path)
    assert cli.main([str(spec), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "runs on UC Merced Land Use instead" in out and "nothing is fetched before a real launch" in out
    assert ucm_env.requests == [] and "data check" not in out

    (tmp_path / "fake_q.py").write_text(FAKE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("FAKE_LOG", str(tmp_path / "log.jsonl"))
    assert cli.main([str(spec), "--executor", "debug", "--execute", "fake_q:record"]) == 0
    out = capsys.readouterr().out
    assert ucm_env.requests == [None]
    assert "UC Merced halves: 84 pretraining images, 84 probe images" in out
    assert "PARTIAL ucm" in out and "84 images, 21 classes" in out  # the probe half: a partial UCM
    (run,) = [json.loads(x) for x in (tmp_path / "log.jsonl").read_text().splitlines()]
    halves = tmp_path / "cache" / "ucmerced" / "halves"
    assert run == {"root": str(halves / "ucm_pool"), "subset": None, "probes": [["ucm", str(halves / "ucm_probe")]]}
    pool = {p.name for p in (halves / "ucm_pool").rglob("*.tif")}
    probe = {p.name for p in (halves / "ucm_probe").rglob("*.tif")}
    assert len(pool) == len(probe) == 84 and not pool & probe
    # status sees the same run (same paths) without fetching anything
    assert cli.main(["status", str(spec)]) == 0
    assert "finished" in capsys.readouterr().out and ucm_env.requests == [None]


def test_offline_quickstart_says_what_to_do(tmp_path, monkeypatch, capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("ROMA_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("ROMA_UCM", raising=False)
    monkeypatch.setenv("ROMA_UCM_URL", f"http://127.0.0.1:{port}/ucm.zip")
    monkeypatch.setenv("ROMA_UCM_SHA256", "0" * 64)
    with pytest.raises(SystemExit, match="cannot reach .*no network connection.*ROMA_UCM"):
        cli.main([str(_spec(tmp_path))])


def test_data_root_given_means_no_fallback(ucm_env, tmp_path, aid_root, capsys):
    assert cli.main([str(_spec(tmp_path)), "--data-root", str(aid_root), "--dry-run", "--skip-data-check"]) == 0
    assert "UC Merced" not in capsys.readouterr().out and ucm_env.requests == []


def _fresh_clone(dst: Path) -> Path:
    """The working tree's files (tracked and untracked-but-not-ignored), as a fresh clone would hold them."""
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                           check=True, capture_output=True).stdout.decode().split("\0")
    for f in filter(None, files):
        src = REPO / f
        if src.is_file():
            (dst / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / f)
    return dst


@pytest.mark.slow
def test_readme_first_command_in_a_fresh_clone_without_shared(ucm_env, tmp_path):
    clone = _fresh_clone(tmp_path / "elsewhere" / "roma")
    assert not (clone.parent / "shared").exists()
    readme = (clone / "README.md").read_text()
    assert "python experiments/launch.py quickstart" in readme
    env = {**os.environ, "PYTHONPATH": str(clone), "OMP_NUM_THREADS": "1", "HOME": str(tmp_path / "home")}
    small = ["train.max_steps=4", "train.global_batch=8", "train.ckpt_every_steps=4", "train.log_every_steps=2"]
    cmd = [sys.executable, "experiments/launch.py", "quickstart", "--set", *small]
    p = subprocess.run(cmd, cwd=clone, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "runs on UC Merced Land Use instead" in p.stdout and "[download ucmerced]" in p.stdout
    assert "done: 1 finished, 0 failed" in p.stdout
    (res,) = (clone / "outputs" / "quickstart").glob("*/eval/probe_ucm_*/results.json")
    metrics = json.loads(res.read_text())["metrics"]
    assert 0.0 <= metrics["ucm_oa_tr50"] <= 100.0
    # a relaunch finds the run finished and the data cached: nothing downloaded again
    p = subprocess.run(cmd, cwd=clone, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0 and ucm_env.requests == [None], p.stdout[-2000:] + p.stderr[-2000:]
