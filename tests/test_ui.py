"""`launch.py ui`: the lean MLflow server on a spec's store, its printed URLs, and a clean stop.

The helpers here (write_spec, log_runs, UIProcess) are shared with tests/test_ui_browser.py.
"""
from __future__ import annotations

import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import psutil
import pytest

from roma.launch import ui

REPO = Path(__file__).resolve().parents[1]
LAUNCH = REPO / "experiments" / "launch.py"
SPEC_NAME = "ui_compare_demo"
START_TIMEOUT_S = 180  # two mlflow imports on a loaded 2-core machine


# ---------------------------------------------------------------- helpers (also used by the browser test)

def write_spec(folder: Path, name: str = SPEC_NAME) -> Path:
    """A two-run micro spec (312 and 625 images) whose outputs and MLflow store live in `folder`."""
    path = folder / f"{name}.yaml"
    path.write_text(f"base: micro\noutput_root: {folder / 'out'}\ngrid: {{data.subset: [312, 625]}}\n")
    return path


def log_runs(spec_path: Path, final: dict[str, list[float]]) -> dict[str, str]:
    """Log the spec's runs through roma.tracking with tiny fake metrics; {run name: MLflow run id}.

    final: single-value metrics, one value per run, e.g. {"aid_oa_tr50": [71.25, 84.5]}."""
    from roma.naming import run_name
    from roma.spec import load_spec
    from roma.tracking import Tracker, plot_loss_curve, run_params

    spec = load_spec(spec_path, check_data=False)
    ids = {}
    for i, cfg in enumerate(spec.runs):
        run_dir = Path(cfg.output_root) / cfg.experiment / cfg.run_id
        run_dir.mkdir(parents=True, exist_ok=True)
        tr = Tracker.open(cfg, run_dir)
        tr.log_params(run_params(cfg, param_count=12345, data_size=cfg.data.subset))
        for step in range(1, 11):  # a loss curve as a step metric
            tr.log_step(step, {"loss": 1.0 / (step + i) + 0.1, "lr": 1e-3})
        tr.flush()
        tr.log_artifact(plot_loss_curve(tr.metric_history("loss"), run_dir / "loss_curve.png", cfg.run_id))
        tr.log_metrics({k: v[i] for k, v in final.items() if k != "final_loss"}, step=10, stage="eval")
        tr.log_metrics({k: v[i] for k, v in final.items() if k == "final_loss"}, step=10, stage="train")
        tr.end("finished")
        ids[run_name(cfg)] = tr.run_id
    return ids


class UIProcess:
    """`python experiments/launch.py ui ARGS --port 0` as a child; its stdout lines arrive on a queue."""

    def __init__(self, *args: str, cwd: Path = REPO):
        self.proc = subprocess.Popen([sys.executable, str(LAUNCH), "ui", *args, "--port", "0"], cwd=cwd,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.lines: list[str] = []
        self._q: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self._q.put(line.rstrip("\n"))
        self._q.put(None)

    def wait_for(self, text: str, timeout_s: float = START_TIMEOUT_S) -> list[str]:
        """Lines printed until one containing `text`; fails with the output so far."""
        deadline = time.monotonic() + timeout_s
        while not any(text in line for line in self.lines):
            try:
                line = self._q.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                line = None
            if line is None:
                self.stop()
                pytest.fail(f"`launch.py ui` did not print {text!r}; output:\n" + "\n".join(self.lines))
            self.lines.append(line)
        return self.lines

    def url(self, marker: str) -> str:
        """The first printed URL on (or right after) the line containing `marker`."""
        for i, line in enumerate(self.lines):
            if marker in line:
                for cand in self.lines[i:i + 2]:
                    m = re.search(r"http://\S+", cand)
                    if m:
                        return m.group(0)
        raise AssertionError(f"no URL after {marker!r} in:\n" + "\n".join(self.lines))

    def tree(self) -> list[psutil.Process]:
        root = psutil.Process(self.proc.pid)
        return [root, *root.children(recursive=True)]

    def stop(self, sig: int = signal.SIGINT, timeout_s: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:  # leave nothing behind even when the test fails
            for p in reversed(self.tree()):
                p.kill()
            raise


def parse_compare_url(url: str) -> tuple[list[str], list[str]]:
    """(run ids, experiment ids) from `.../#/compare-runs?runs=[...]&experiments=[...]`."""
    base, _, frag = url.partition("#")
    path, _, query = frag.partition("?")
    assert path == "/compare-runs", url
    q = urllib.parse.parse_qs(query)
    return json.loads(q["runs"][0]), json.loads(q["experiments"][0])


def assert_all_gone(procs: list[psutil.Process], timeout_s: float = 15) -> None:
    _, alive = psutil.wait_procs(procs, timeout=timeout_s)
    alive = [p for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not alive, f"processes left running: {[(p.pid, p.cmdline()[:4]) for p in alive]}"


def listening(procs: list[psutil.Process]) -> set[tuple[str, int]]:
    addrs = set()
    for p in procs:
        try:
            conns = p.net_connections(kind="inet")
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        addrs |= {(c.laddr.ip, c.laddr.port) for c in conns if c.status == psutil.CONN_LISTEN}
    return addrs


# ---------------------------------------------------------------- units (no server)

def test_compare_url_is_mlflow3_route_and_round_trips():
    url = ui.compare_url("http://127.0.0.1:5000", "7", ["ab12", "cd34"])
    assert url.startswith("http://127.0.0.1:5000/#/compare-runs?runs=")
    assert " " not in url and '"' not in url  # one clickable token in a terminal
    assert parse_compare_url(url) == (["ab12", "cd34"], ["7"])
    assert ui.experiment_url("http://127.0.0.1:5000", "7") == \
        "http://127.0.0.1:5000/#/experiments/7/runs?workflowType=machine_learning"  # the training-runs view
    assert ui.loss_compare_url("http://127.0.0.1:5000", "7", "roma-abc") == (
        "http://127.0.0.1:5000/#/experiments/7/runs?compareRunsMode=CHART&viewStateShareKey=roma-abc"
        "&workflowType=machine_learning")


def test_compare_view_is_mlflows_saved_view_of_the_runs_loss_curves():
    from roma.tracking import LOSS_CHARTS, compare_view

    key, value = compare_view(["b2", "a1"], "loss curves: demo (2 runs)")
    assert key == compare_view(["a1", "b2"], "other name")[0] and key.startswith("roma-")  # the runs decide
    envelope = json.loads(value)
    assert envelope["name"] == "loss curves: demo (2 runs)" and isinstance(envelope["createdAt"], int)
    state = json.loads(envelope["state"])  # MLflow parses the state string (plain JSON, or compressed)
    assert state["searchFilter"] == "attributes.run_id IN ('a1', 'b2')" and state["runsHiddenMode"] == "SHOWALL"
    assert [c["metricKey"] for c in state["compareRunCharts"]] == ["train/loss", "val/loss"]
    assert all(c["type"] == "LINE" and c["metricSectionId"] == state["compareRunSections"][0]["uuid"]
               for c in state["compareRunCharts"])
    assert state["compareRunSections"][0]["columns"] == 2  # side by side
    assert all(re.match(LOSS_CHARTS, k) for k in ("train/loss", "val/loss"))
    assert not any(re.match(LOSS_CHARTS, k) for k in ("train/lr", "train/final_loss", "val/loss_token"))


def test_server_command_is_lean_and_local():
    cmd = ui.server_command("sqlite:////x/mlflow.db", "127.0.0.1", 5123, "file:///x/mlartifacts")
    assert cmd[:4] == [sys.executable, "-m", "mlflow", "server"]
    assert cmd[cmd.index("--workers") + 1] == "1"
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1"
    assert cmd[cmd.index("--backend-store-uri") + 1] == "sqlite:////x/mlflow.db"
    assert ui.server_env()["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
    assert ui.parse_args([]).host == "127.0.0.1"
    assert ui.display_host("0.0.0.0") == "127.0.0.1" and ui.display_host("::1") == "[::1]"


def test_target_follows_tracking_rules(tmp_path):
    import dataclasses

    from roma.spec import load_spec
    from roma.tracking import tracking_uri

    spec = load_spec(write_spec(tmp_path), check_data=False)
    t = ui.target_for_runs(spec.runs)
    assert t.tracking_uri == tracking_uri(spec.runs[0]) == f"sqlite:///{tmp_path / 'out' / SPEC_NAME / 'mlflow.db'}"
    assert t.experiment == SPEC_NAME and set(t.run_ids) == {c.run_id for c in spec.runs}
    other = dataclasses.replace(spec.runs[1], tracking_uri=f"sqlite:///{tmp_path / 'b.db'}")
    with pytest.raises(ui.UIError, match="2 tracking stores"):
        ui.target_for_runs([spec.runs[0], other])
    with pytest.raises(ui.UIError, match="already an MLflow server"):
        ui.target_for_runs([dataclasses.replace(spec.runs[0], tracking_uri="http://10.0.0.1:5000")])


def test_target_without_spec_needs_exactly_one_store(tmp_path):
    with pytest.raises(ui.UIError, match="name a spec.*none"):
        ui.target_without_spec(tmp_path)
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "mlflow.db").touch()
        if name == "a":
            assert ui.target_without_spec(tmp_path).experiment == "a"
    with pytest.raises(ui.UIError, match="name a spec.*a, b"):
        ui.target_without_spec(tmp_path)


def test_busy_port_is_a_clear_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        with pytest.raises(ui.UIError, match=r"--port 0"):
            ui.check_port("127.0.0.1", s.getsockname()[1])


def test_bad_spec_fails_before_any_server(tmp_path):
    out = subprocess.run([sys.executable, str(LAUNCH), "ui", str(tmp_path / "missing.yaml")], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "missing.yaml" in out.stderr


# ---------------------------------------------------------------- the real server

@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    """Two finished runs, plus an older MLflow run of the first config (as a --force rerun leaves)."""
    from roma.spec import load_spec
    from roma.tracking import Tracker

    folder = tmp_path_factory.mktemp("ui")
    spec = write_spec(folder)
    (folder / "stale").mkdir()
    stale = Tracker.open(load_spec(spec, check_data=False).runs[0], folder / "stale")
    stale.end("failed")
    ids = log_runs(spec, {"aid_oa_tr50": [71.25, 84.5], "final_loss": [0.2, 0.19]})
    assert stale.run_id not in ids.values()
    return spec, ids


def test_ui_prints_urls_binds_localhost_and_stops_clean(logged):
    spec, ids = logged
    u = UIProcess(str(spec))
    try:
        lines = u.wait_for("Ctrl-C stops the server")
        base = u.url("MLflow UI:")
        host, port = urllib.parse.urlparse(base).hostname, urllib.parse.urlparse(base).port
        assert host == "127.0.0.1"
        procs = u.tree()
        assert len(procs) <= 3, f"not lean: {[p.cmdline()[:5] for p in procs]}"  # launcher, mlflow, uvicorn
        assert listening(procs) == {("127.0.0.1", port)}

        # the printed runs-table URL names the spec's experiment, tagged as training runs; the loss-curve
        # URL opens the saved view of exactly its two runs; the compare table has exactly those two
        exp_id = re.search(r"#/experiments/(\d+)/runs\?", u.url(f"runs table of {SPEC_NAME}:")).group(1)
        with urllib.request.urlopen(f"{base}/api/2.0/mlflow/experiments/get-by-name?"
                                    f"experiment_name={SPEC_NAME}", timeout=30) as r:
            exp = json.load(r)["experiment"]
        tags = {t["key"]: t["value"] for t in exp["tags"]}
        assert exp["experiment_id"] == exp_id and tags["mlflow.experimentKind"] == "custom_model_development"
        loss_url = u.url("loss curves of its 2 runs side by side")
        key = urllib.parse.parse_qs(loss_url.partition("?")[2])["viewStateShareKey"][0]
        state = json.loads(json.loads(tags[f"mlflow.sharedViewState.{key}"])["state"])
        assert state["searchFilter"] == "attributes.run_id IN ({})".format(
            ", ".join(f"'{i}'" for i in sorted(ids.values())))  # the newest run of each config, not the stale one
        runs, exps = parse_compare_url(u.url("compare table of its 2 runs"))
        assert sorted(runs) == sorted(ids.values()) and exps == [exp_id]
        assert all(name in "\n".join(lines) for name in ids)

        # artifacts are served from where roma.tracking put them
        rid = ids["roma_micro_tiny-312-seed0"]
        with urllib.request.urlopen(f"{base}/get-artifact?path=loss_curve.png&run_uuid={rid}", timeout=30) as r:
            assert r.read(8) == b"\x89PNG\r\n\x1a\n"
    finally:
        rc = u.stop(signal.SIGINT)
    assert rc == 0, "\n".join(u.lines)
    assert_all_gone(procs)
    server_pid = int(re.search(r"MLflow server \(pid (\d+)\)", "\n".join(u.lines)).group(1))
    with pytest.raises(ProcessLookupError):  # nothing left in the server's process group either
        os.killpg(server_pid, 0)


def test_ui_without_spec_serves_the_only_store_and_stops_on_sigterm(logged):
    spec, ids = logged
    u = UIProcess("--output-root", str(spec.parent / "out"))
    try:
        u.wait_for("Ctrl-C stops the server")
        runs, _ = parse_compare_url(u.url("compare table of its 2 runs"))
        assert sorted(runs) == sorted(ids.values())
        procs = u.tree()
    finally:
        rc = u.stop(signal.SIGTERM)
    assert rc == 0, "\n".join(u.lines)
    assert_all_gone(procs)
