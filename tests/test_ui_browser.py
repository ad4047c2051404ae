"""The MLflow pages `launch.py ui` prints, rendered by headless Chromium as a person would see them:
the loss curves of a real tiny sweep side by side (its printed chart-compare URL), and the compare
table of two runs.

Installs Debian's `chromium` when it is missing (root + apt-get), else skips with the reason.
ROMA_UPDATE_SCREENSHOT=1 also writes the loss-curve screenshot to docs/mlflow_compare.png (the one
docs/analysis.md shows).
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import psutil
import pytest
import yaml
from test_train_helpers import write_pngs
from test_ui import REPO, UIProcess, assert_all_gone, log_runs, write_spec

pytestmark = pytest.mark.browser

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--virtual-time-budget=10000",  # without it the page shows only loading placeholders
                  "--hide-scrollbars", "--window-size=1600,1000"]
AID_OA = {"roma_micro_tiny-312-seed0": 71.25, "roma_micro_tiny-625-seed0": 84.5}  # distinctive values
SCREENSHOT = REPO / "docs" / "mlflow_compare.png"
BUDGETS = (25_000, 60_000, 120_000)  # virtual ms for a page with charts, tried in turn


def chromium() -> str:
    """The chromium binary, installed with apt-get when missing; skips where that is impossible."""
    exe = shutil.which("chromium")
    if exe:
        return exe
    if not shutil.which("apt-get"):
        pytest.skip("Chromium is not installed and apt-get is absent (not Debian/Ubuntu): cannot install it")
    if os.geteuid() != 0:
        pytest.skip("Chromium is not installed and installing it needs root (apt-get install -y chromium)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    log = []
    for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", "--no-install-recommends", "chromium"]):
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
        log.append(out.stdout[-1500:] + out.stderr[-1500:])
        if out.returncode:
            pytest.skip(f"`{' '.join(cmd)}` failed ({out.returncode}), Chromium cannot be installed:\n{log[-1]}")
    exe = shutil.which("chromium")
    if not exe:
        pytest.skip("apt-get installed chromium but no `chromium` is on PATH")
    return exe


def run_chromium(exe: str, profile: Path, *args: str, timeout_s: float = 180) -> subprocess.CompletedProcess:
    """One headless Chromium call with a fresh profile, in its own process group (killed whole after)."""
    proc = subprocess.Popen([exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"chromium {args} took over {timeout_s} s; stderr:\n{err[-3000:]}")
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # renderer/zygote helpers, if any outlived the browser
        except ProcessLookupError:
            pass
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


class _Text(HTMLParser):
    """The visible text nodes of a DOM dump (scripts and styles dropped)."""

    def __init__(self):
        super().__init__()
        self.texts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag, attrs):
        self._skip += tag in ("script", "style")

    def handle_endtag(self, tag):
        self._skip -= tag in ("script", "style") and self._skip > 0

    def handle_data(self, data):
        if not self._skip and data.strip():
            self.texts.append(data.strip())


def dom_texts(html: str) -> list[str]:
    p = _Text()
    p.feed(html)
    return p.texts


def curve_pixels(png: Path) -> int:
    """Coloured pixels where the two loss charts are drawn (1600 x 1000 window): 0 while they load."""
    import numpy as np
    from PIL import Image

    a = np.asarray(Image.open(png).convert("RGB")).astype(int)
    h, w, _ = a.shape
    charts = a[int(h * 0.38):int(h * 0.8), int(w * 0.33):int(w * 0.72)]  # left of MLflow's assistant panel
    return int(((charts.max(-1) - charts.min(-1)) > 80).sum())


def tiny_sweep(folder: Path) -> Path:
    """A real 3-run data sweep (micro RoMA at 32 px, 2-4 steps each, held-out loss every step, no
    evaluation), launched through the launcher's debug executor; -> the spec's path."""
    from roma.launch import cli

    spec = folder / "sweep.yaml"
    spec.write_text(yaml.safe_dump({
        "base": "micro", "output_root": str(folder / "out"), "data.root": str(write_pngs(folder / "imgs", n=20)),
        "data.heldout_size": 4, "data.num_workers": 0,
        "model.img_size": 32, "model.cluster_size": 2, "model.decoder_dim": 16, "msp.scales": [2],
        "msp.hidden_dim": 16, "ares.region_sizes": [2], "eval.probes": [],
        "train": {"epochs": 1, "max_steps": None, "global_batch": 4, "warmup_epochs": 0.5, "log_every_steps": 1,
                  "val_every_steps": 1, "ckpt_every_steps": 100},
        "grid": {"data.subset": [8, 12, 16]}}))
    assert cli.main([str(spec), "--executor", "debug"]) == 0
    return spec


def test_the_printed_chart_url_shows_the_sweeps_loss_curves_side_by_side(tmp_path, monkeypatch, capsys):
    exe = chromium()
    monkeypatch.setenv("ROMA_PROGRESS", "off")
    spec = tiny_sweep(tmp_path)
    launched = capsys.readouterr().out
    assert "loss curves of its 3 runs side by side" in launched  # the launcher says where, too
    names = [f"roma_micro_tiny-{n}-seed0" for n in (8, 12, 16)]
    u = UIProcess(str(spec))
    try:
        u.wait_for("Ctrl-C stops the server")
        url = u.url("loss curves of its 3 runs side by side")
        assert "compareRunsMode=CHART" in url and "workflowType=machine_learning" in url
        procs = u.tree()

        # the charts fetch their metric histories after the page: on a loaded machine that can outlast a
        # virtual-time budget, so a page without its legends is rendered again with a longer one
        for budget in BUDGETS:
            dom = run_chromium(exe, tmp_path / f"profile-dom-{budget}", f"--virtual-time-budget={budget}",
                               "--dump-dom", url)
            assert dom.returncode == 0, dom.stderr[-3000:]
            texts = dom_texts(dom.stdout)
            if f"{names[0]} (val/loss)" in texts:
                break
        page = " | ".join(texts)
        assert "Model training" in texts and "Detect Issues" not in page, page[:3000]  # the training-runs view
        assert "3 | matching runs" in page and "loss curves" in texts, page[:3000]
        for chart in ("train/loss", "val/loss"):
            assert chart in texts, f"no {chart} chart: {page[:3000]}"
            for name in names:  # a legend entry per drawn curve: every run's curve in both charts
                assert f"{name} ({chart})" in texts, f"{name} has no {chart} curve: {page[:3000]}"
        assert "train/lr" not in texts and "train/images_per_s" not in texts  # only the loss curves
        lines = [d for d in re.findall(r'class="js-line" d="([^"]*)"', dom.stdout) if d.count("L") >= 1]
        assert len(lines) >= 2 * len(names), f"{len(lines)} drawn curves, expected {2 * len(names)}"

        shot = tmp_path / "mlflow_compare.png"
        for budget in BUDGETS:  # a screenshot, too, can be taken before the charts' data arrives
            pic = run_chromium(exe, tmp_path / f"profile-shot-{budget}", f"--virtual-time-budget={budget}",
                               f"--screenshot={shot}", url)
            assert pic.returncode == 0 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", pic.stderr[-3000:]
            if curve_pixels(shot) > 500:
                break
        assert curve_pixels(shot) > 500, "the screenshot shows no loss curves"
        if os.environ.get("ROMA_UPDATE_SCREENSHOT") == "1":
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            tmp = SCREENSHOT.with_name(f".{SCREENSHOT.name}.tmp")
            shutil.copyfile(shot, tmp)
            os.replace(tmp, SCREENSHOT)
    finally:
        rc = u.stop(signal.SIGINT)
    assert_stopped_clean(u, rc, procs, tmp_path)


def assert_stopped_clean(u, rc: int, procs, tmp_path) -> None:
    """The UI server stopped on SIGINT with exit 0, its process tree is gone, no Chromium is left."""
    assert rc == 0, "\n".join(u.lines)
    assert_all_gone(procs)
    leftovers = [p for p in psutil.process_iter(["cmdline"]) if str(tmp_path) in " ".join(p.info["cmdline"] or [])]
    assert not leftovers, f"chromium processes left: {[p.pid for p in leftovers]}"


def test_compare_table_renders_both_runs_and_a_metric(tmp_path):
    exe = chromium()
    spec = write_spec(tmp_path)
    ids = log_runs(spec, {"aid_oa_tr50": list(AID_OA.values()), "final_loss": [0.231, 0.187]})
    assert set(ids) == set(AID_OA)
    u = UIProcess(str(spec))
    try:
        u.wait_for("Ctrl-C stops the server")
        url = u.url("compare table of its 2 runs")
        procs = u.tree()

        dom = run_chromium(exe, tmp_path / "profile-dom", "--dump-dom", url)
        assert dom.returncode == 0, dom.stderr[-3000:]
        texts = dom_texts(dom.stdout)
        page = " | ".join(texts)
        assert "Comparing 2 Runs from 1 Experiment" in texts, page[:3000]
        for name, value in AID_OA.items():
            assert name in texts, f"run {name} not rendered: {page[:3000]}"
            assert f"{value:g}" in texts, f"aid_oa_tr50 of {name} ({value:g}) not rendered: {page[:3000]}"
        assert "eval/aid_oa_tr50" in texts and "train/final_loss" in texts, page[:3000]  # grouped names
    finally:
        rc = u.stop(signal.SIGINT)
    assert_stopped_clean(u, rc, procs, tmp_path)
