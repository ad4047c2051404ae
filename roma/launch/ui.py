"""`launch.py ui [SPEC]`: a lean MLflow server on a spec's tracking store, with compare URLs.

    python experiments/launch.py ui scaling_data_micro              # http://127.0.0.1:5000
    python experiments/launch.py ui quickstart --port 0              # any free port

The server is `mlflow server` with one uvicorn worker and no job-execution runner (the default
starts 4 workers plus a huey job consumer with its own workers). It binds 127.0.0.1 unless told
otherwise, runs in its own process group, and that whole group is stopped on Ctrl-C / SIGTERM.
Artifacts are read where the runs logged them (roma.tracking: <output_root>/<experiment>/mlartifacts).
Once the server answers it prints the runs-table URL (MLflow's training-runs view, not its GenAI
one), the chart-compare URL that opens on the loss curves of the spec's runs side by side (a saved
view written into the store, roma.tracking.compare_view) and the compare-runs table of every value.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from roma.config import RunConfig

DEFAULT_PORT = 5000  # MLflow's own default
READY_TIMEOUT_S = 180.0  # cold start on a busy 2-core machine takes ~10-30 s
STOP_TIMEOUT_S = 10.0


class UIError(RuntimeError):
    """A problem the user can fix (busy port, mixed stores, server that would not start)."""


# ---------------------------------------------------------------- which store, which experiment

@dataclass
class Target:
    tracking_uri: str  # sqlite:///... or file:///...
    experiment: str | None  # MLflow experiment name (None: no spec given, the whole store)
    run_ids: tuple[str, ...] = ()  # the spec's config run ids (MLflow tag `run_id`); () = every run
    artifact_root: str | None = None  # default artifact root for experiments created in the UI


def _store_dir(uri: str) -> Path | None:
    """The folder holding a local store (sqlite:///x/mlflow.db -> x, file:///x/mlruns -> x/mlruns)."""
    from roma.tracking import sqlite_path

    db = sqlite_path(uri)
    if db is not None:
        return db.parent
    if uri.startswith("file://"):
        return Path(urllib.parse.urlparse(uri).path)
    return None


def target_for_runs(runs: list[RunConfig]) -> Target:
    """The tracking store and experiment shared by a spec's runs (see roma.tracking.tracking_uri)."""
    from roma.tracking import store_of

    try:
        uri, experiment = store_of(runs)
    except ValueError as e:
        raise UIError(f"{e}; one `ui` serves one store and experiment") from None
    if uri.startswith(("http://", "https://")):
        raise UIError(f"tracking_uri {uri} is already an MLflow server: open it in a browser")
    store = _store_dir(uri)
    if store is None:
        raise UIError(f"tracking_uri {uri}: only sqlite:/// and file:// stores can be served by `ui`")
    # sqlite: new experiments' artifacts beside the store, where roma.tracking puts them; a file store holds its own
    artifacts = (store / "mlartifacts").resolve().as_uri() if uri.startswith("sqlite:") else None
    return Target(uri, experiment, tuple(c.run_id for c in runs), artifacts)


def target_without_spec(output_root: Path) -> Target:
    """No spec given: the one experiment store under output_root, else name the candidates."""
    dbs = sorted(Path(output_root).glob("*/mlflow.db"))
    if len(dbs) == 1:
        db = dbs[0].resolve()
        return Target(f"sqlite:///{db}", db.parent.name, (), (db.parent / "mlartifacts").as_uri())
    found = ", ".join(p.parent.name for p in dbs) if dbs else "none"
    raise UIError(f"name a spec: `launch.py ui SPEC` (experiment stores under {output_root}: {found})")


# ---------------------------------------------------------------- the server process

def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def check_port(host: str, port: int) -> None:
    """Fail early and clearly when host:port is taken (mlflow would only log a uvicorn traceback)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError as e:
            raise UIError(f"cannot listen on {host}:{port} ({e.strerror}); another MLflow UI? "
                          "Pass --port N, or --port 0 for a free one") from None


def server_command(uri: str, host: str, port: int, artifact_root: str | None = None) -> list[str]:
    """`mlflow server` with one uvicorn worker; artifacts are read from each run's own (file) URI."""
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri,
           "--host", host, "--port", str(port), "--workers", "1", "--no-serve-artifacts"]
    if artifact_root:
        cmd += ["--default-artifact-root", artifact_root]
    return cmd


def server_env() -> dict[str, str]:
    env = dict(os.environ)
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"  # no huey job runner (its processes, its RAM)
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    env["DO_NOT_TRACK"] = "true"
    return env


def _die_with_parent() -> None:  # child side of Popen: SIGTERM us if the launcher dies (Linux)
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def start_server(uri: str, host: str, port: int, artifact_root: str | None = None,
                 log=None) -> subprocess.Popen:
    """The server in a new session (its own process group), so Ctrl-C reaches only us and we stop it whole."""
    return subprocess.Popen(server_command(uri, host, port, artifact_root), env=server_env(),
                            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT if log else None,
                            start_new_session=True,
                            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)


def _tail(path: Path | None, n: int = 15) -> str:
    if path is None or not path.exists():
        return ""
    lines = path.read_text(errors="replace").splitlines()[-n:]
    return "".join(f"\n  | {line}" for line in lines)


def wait_ready(base_url: str, proc: subprocess.Popen, timeout_s: float = READY_TIMEOUT_S,
               log_path: Path | None = None) -> None:
    """Poll /health until the server answers OK; fail if it exits or takes longer than timeout_s."""
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            raise UIError(f"the MLflow server exited with code {proc.returncode} before answering"
                          + (f"; end of {log_path}:{_tail(log_path)}" if log_path else ""))
        try:
            with urllib.request.urlopen(f"{base_url}/health", timeout=5) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            pass
        if time.monotonic() > deadline:
            raise UIError(f"the MLflow server did not answer at {base_url}/health within {timeout_s:.0f} s"
                          + (f"; end of {log_path}:{_tail(log_path)}" if log_path else ""))
        time.sleep(0.3)


def stop_server(proc: subprocess.Popen, timeout_s: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM the server's process group, SIGKILL what is left after timeout_s; reap everything."""
    import psutil

    pgid = proc.pid  # start_new_session: the group id is the leader's pid
    try:
        procs = [psutil.Process(proc.pid)]
        procs += procs[0].children(recursive=True)
    except psutil.NoSuchProcess:
        procs = []
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            break
        _, alive = psutil.wait_procs(procs, timeout=timeout_s)  # reaps our direct child too
        if not alive:
            break
    proc.wait(timeout=timeout_s)
    try:  # a member that left the tree but not the group (reparented to init)
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


# ---------------------------------------------------------------- URLs

def display_host(host: str) -> str:
    """The host to put in URLs: a wildcard bind is reached locally through 127.0.0.1."""
    if host in ("0.0.0.0", "::", ""):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


# MLflow 3's UI opens an experiment on its GenAI views unless told otherwise: workflowType=machine_learning
# (its sidebar switch, read from the URL first) opens the training-runs view.
ML_VIEW = "workflowType=machine_learning"


def experiment_url(base_url: str, experiment_id: str) -> str:
    """The experiment's runs table."""
    return f"{base_url}/#/experiments/{experiment_id}/runs?{ML_VIEW}"


def loss_compare_url(base_url: str, experiment_id: str, share_key: str) -> str:
    """The runs page's chart view on the saved view `share_key` (roma.tracking.compare_view): the
    selected runs' loss curves side by side."""
    q = urllib.parse.urlencode({"compareRunsMode": "CHART", "viewStateShareKey": share_key})
    return f"{base_url}/#/experiments/{experiment_id}/runs?{q}&{ML_VIEW}"


def compare_url(base_url: str, experiment_id: str, mlflow_run_ids: list[str]) -> str:
    """MLflow 3's compare view: `#/compare-runs?runs=[ids]&experiments=[ids]` (JSON arrays, as the UI
    builds them in getCompareRunPageRoute), percent-encoded so terminals keep the link whole."""
    def arr(ids) -> str:  # JSON.stringify's compact form
        return json.dumps(list(ids), separators=(",", ":"))

    q = urllib.parse.urlencode({"runs": arr(mlflow_run_ids), "experiments": arr([experiment_id])},
                               quote_via=urllib.parse.quote)
    return f"{base_url}/#/compare-runs?{q}"


def print_compare_urls(base_url: str, uri: str, experiment: str, run_ids=(), out=None) -> bool:
    """The runs-table URL and the loss-curve compare URL of the experiment (its view written into the
    store first); False when no run is there yet. The launcher and `ui` print these."""
    from roma.tracking import publish_compare_view

    out = out or sys.stdout
    view = publish_compare_view(uri, experiment, tuple(run_ids))
    if view is None:
        return False
    exp_id, key, names = view
    print(f"runs table of {experiment}: {experiment_url(base_url, exp_id)}", file=out)
    print(f"loss curves of its {len(names)} runs side by side ({', '.join(names)}):", file=out)
    print(f"  {loss_compare_url(base_url, exp_id, key)}", file=out)
    return True


def _api(base_url: str, path: str, body: dict | None = None, params: dict | None = None) -> dict:
    """One REST call to the server (GET with params, POST with a JSON body); 404 -> {}."""
    url = f"{base_url}/api/2.0/mlflow/{path}" + (f"?{urllib.parse.urlencode(params)}" if params else "")
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        if e.code == 404:
            return {}
        raise UIError(f"MLflow server: {path} answered {e.code}: {e.read()[:300]!r}") from None
    except urllib.error.URLError as e:
        raise UIError(f"MLflow server at {base_url} stopped answering ({e.reason})") from None


def find_runs(base_url: str, experiment: str, run_ids: tuple[str, ...] = ()) -> tuple[str | None, list[dict]]:
    """(experiment id, [{"id", "name", "run_id"}]) of the experiment's live runs, by name.

    With run_ids (the spec's config ids), only runs tagged with one of them, and of several MLflow
    runs of one config (a --force rerun) the newest."""
    exp = _api(base_url, "experiments/get-by-name", params={"experiment_name": experiment}).get("experiment")
    if not exp:
        return None, []
    runs, token = [], None
    while True:
        body = {"experiment_ids": [exp["experiment_id"]], "max_results": 1000, "run_view_type": "ACTIVE_ONLY",
                "order_by": ["attributes.start_time DESC"], **({"page_token": token} if token else {})}
        page = _api(base_url, "runs/search", body)
        runs += page.get("runs", [])
        token = page.get("next_page_token")
        if not token:
            break
    out, seen = [], set()
    for r in runs:  # newest first
        tags = {t["key"]: t["value"] for t in r.get("data", {}).get("tags", [])}
        cfg_id = tags.get("run_id", "")
        if (run_ids and cfg_id not in run_ids) or (cfg_id and cfg_id in seen):
            continue
        seen.add(cfg_id)
        out.append({"id": r["info"]["run_id"], "name": r["info"].get("run_name") or tags.get("mlflow.runName", ""),
                    "run_id": cfg_id})
    return exp["experiment_id"], sorted(out, key=lambda r: r["name"])


def print_urls(base_url: str, target: Target, out=None) -> None:
    out = out or sys.stdout
    print(f"MLflow UI: {base_url}  (store {target.tracking_uri})", file=out)
    if target.experiment is None:
        return
    exp_id, runs = find_runs(base_url, target.experiment, target.run_ids)
    if exp_id is None:
        print(f"experiment {target.experiment!r} is not in the store yet (no run has started); "
              "refresh the page once runs are launched", file=out)
        return
    if not print_compare_urls(base_url, target.tracking_uri, target.experiment, target.run_ids, out):
        print(f"runs table of {target.experiment}: {experiment_url(base_url, exp_id)}", file=out)
        print("no MLflow run of this spec yet", file=out)
        return
    if runs:  # every metric and param of the runs, side by side
        print(f"compare table of its {len(runs)} runs: {compare_url(base_url, exp_id, [r['id'] for r in runs])}",
              file=out)


# ---------------------------------------------------------------- CLI

class _Stop(Exception):
    pass


def _raise_stop(signum, _frame):
    raise _Stop(signal.Signals(signum).name)


def add_args(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """`launch.py ui`'s options (the launcher's subcommand parser, and parse_args below)."""
    p.add_argument("spec", nargs="?", help="spec name or YAML path; omitted: the only store under --output-root")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"default {DEFAULT_PORT}; 0 = any free port")
    p.add_argument("--host", default="127.0.0.1",
                   help="interface to bind (default 127.0.0.1; MLflow has no login: bind others with care)")
    p.add_argument("--set", dest="sets", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                   help="config overrides, as for launching (e.g. output_root=/scratch/out)")
    p.add_argument("--data-root", help="the --data-root the spec was launched with (it is part of each run's id)")
    p.add_argument("--only", metavar="PATTERN", help="compare only runs whose name or id matches (as for launching)")
    p.add_argument("--output-root", help="where to look for stores when no spec is given "
                   "(default: the config's output_root, relative to the repository)")
    return p


def check_args(args: argparse.Namespace, p: argparse.ArgumentParser) -> argparse.Namespace:
    if not 0 <= args.port <= 65535:
        p.error(f"--port {args.port}: expected 0..65535")
    if (args.sets or args.data_root or args.only) and not args.spec:
        p.error("--set, --data-root and --only need a SPEC")
    return args


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = add_args(argparse.ArgumentParser(
        prog="launch.py ui", description="Serve a spec's MLflow store (one worker, 127.0.0.1) and print compare URLs."))
    return check_args(p.parse_args(argv), p)


def resolve_target(args: argparse.Namespace) -> Target:
    from roma.spec import REPO_ROOT, load_spec, parse_set, select  # ConfigError: the CLI prints it

    if args.spec:
        spec = load_spec(args.spec, parse_set(args.sets), data_root=args.data_root, check_data=False,
                         require_env=False)
        runs = select(spec.runs, args.only)
        if not runs:
            raise UIError(f"no run of {spec.name} matches --only {args.only!r}")
        return target_for_runs(runs)
    return target_without_spec(Path(args.output_root) if args.output_root else REPO_ROOT / RunConfig().output_root)


def serve(target: Target, host: str = "127.0.0.1", port: int = DEFAULT_PORT, out=None) -> int:
    """Start the server, print its URLs once it answers, run until it exits or we get SIGINT/SIGTERM."""
    out = out or sys.stdout
    old = {s: signal.signal(s, _raise_stop) for s in (signal.SIGINT, signal.SIGTERM)}
    proc = None
    try:
        store = _store_dir(target.tracking_uri)
        store.mkdir(parents=True, exist_ok=True)  # sqlite needs its folder
        port = port or free_port(host)
        check_port(host, port)
        base_url = f"http://{display_host(host)}:{port}"
        if host not in ("127.0.0.1", "localhost", "::1"):
            print(f"warning: binding {host}: anyone who reaches this port can read and edit runs", file=sys.stderr)
        log_path = store / "mlflow-ui.log"  # the server's own output (one line per request)
        with open(log_path, "wb") as log:  # this session only
            proc = start_server(target.tracking_uri, host, port, target.artifact_root, log=log)
        print(f"starting MLflow server (pid {proc.pid}) on {host}:{port}, log {log_path} ...", file=out, flush=True)
        wait_ready(base_url, proc, log_path=log_path)
        print_urls(base_url, target, out)
        print("Ctrl-C stops the server.", file=out, flush=True)
        rc = proc.wait()
        print(f"the MLflow server exited with code {rc}; see {log_path}", file=sys.stderr)
        return rc or 1
    except UIError as e:
        print(f"launch.py ui: {e}", file=sys.stderr)
        return 2
    except (_Stop, KeyboardInterrupt):
        print("stopping the MLflow server ...", file=sys.stderr, flush=True)
        return 0
    finally:
        if proc is not None:
            for s in old:  # a second Ctrl-C must not abandon the stop half-way (orphans)
                signal.signal(s, signal.SIG_IGN)
            stop_server(proc)
        for s, h in old.items():
            signal.signal(s, h)


def run(args: argparse.Namespace) -> int:
    """`launch.py ui`: resolve the store here, then serve from a fresh interpreter.

    Loading a spec imports the model registry (torch, ~200 MB); the process that waits on the
    server for hours need not keep that, so it replaces itself (exec: same pid, same terminal,
    Ctrl-C still reaches it) with `python -m roma.launch.ui --serve TARGET_JSON HOST PORT`."""
    try:
        target = resolve_target(args)
    except UIError as e:
        print(f"launch.py ui: {e}", file=sys.stderr)
        return 2
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, "-m", "roma.launch.ui", "--serve",
                              json.dumps(dataclasses.asdict(target)), args.host, str(args.port)])
    return 1  # not reached


def main(argv: list[str] | None = None) -> int:
    return run(parse_args(list(sys.argv[1:] if argv is None else argv)))


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--serve":
        t = json.loads(sys.argv[2])
        sys.exit(serve(Target(**{**t, "run_ids": tuple(t["run_ids"])}), sys.argv[3], int(sys.argv[4])))
    sys.exit(main())
