"""The compare view of two runs, rendered by headless Chromium as a person would see it.

Installs Debian's `chromium` when it is missing (root + apt-get), else skips with the reason.
ROMA_UPDATE_SCREENSHOT=1 also writes the screenshot to docs/mlflow_compare.png (the one docs/analysis.md shows).
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import psutil
import pytest
from test_ui import REPO, UIProcess, assert_all_gone, log_runs, write_spec

pytestmark = pytest.mark.browser

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--virtual-time-budget=10000",  # without it the page shows only loading placeholders
                  "--hide-scrollbars", "--window-size=1400,1000"]
AID_OA = {"roma_micro_tiny-312-seed0": 71.25, "roma_micro_tiny-625-seed0": 84.5}  # distinctive values
SCREENSHOT = REPO / "docs" / "mlflow_compare.png"


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


def test_compare_page_renders_both_runs_and_a_metric(tmp_path):
    exe = chromium()
    spec = write_spec(tmp_path)
    ids = log_runs(spec, {"aid_oa_tr50": list(AID_OA.values()), "final_loss": [0.231, 0.187]})
    assert set(ids) == set(AID_OA)
    u = UIProcess(str(spec))
    try:
        u.wait_for("Ctrl-C stops the server")
        url = u.url("compare its 2 runs")
        procs = u.tree()

        dom = run_chromium(exe, tmp_path / "profile-dom", "--dump-dom", url)
        assert dom.returncode == 0, dom.stderr[-3000:]
        texts = dom_texts(dom.stdout)
        page = " | ".join(texts)
        assert "Comparing 2 Runs from 1 Experiment" in texts, page[:3000]
        for name, value in AID_OA.items():
            assert name in texts, f"run {name} not rendered: {page[:3000]}"
            assert f"{value:g}" in texts, f"aid_oa_tr50 of {name} ({value:g}) not rendered: {page[:3000]}"
        assert "aid_oa_tr50" in texts and "final_loss" in texts, page[:3000]

        shot = tmp_path / "mlflow_compare.png"
        pic = run_chromium(exe, tmp_path / "profile-shot", f"--screenshot={shot}", url)
        assert pic.returncode == 0 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", pic.stderr[-3000:]
        assert shot.stat().st_size > 20_000, "the screenshot is nearly empty"
        if os.environ.get("ROMA_UPDATE_SCREENSHOT") == "1":
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            tmp = SCREENSHOT.with_name(f".{SCREENSHOT.name}.tmp")
            shutil.copyfile(shot, tmp)
            os.replace(tmp, SCREENSHOT)
    finally:
        rc = u.stop(signal.SIGINT)
    assert rc == 0, "\n".join(u.lines)
    assert_all_gone(procs)
    leftovers = [p for p in psutil.process_iter(["cmdline"]) if str(tmp_path) in " ".join(p.info["cmdline"] or [])]
    assert not leftovers, f"chromium processes left: {[p.pid for p in leftovers]}"
