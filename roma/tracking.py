"""MLflow tracking: one MLflow run per training run, resumed into the same run after a restart.

    tr = Tracker.open(cfg, run_dir)          # creates the run, or reopens the one named in run_dir
    tr.log_params({...}); tr.log_step(step, {"loss": ..}); tr.flush()
    tr.log_metrics({"aid_oa_tr50": 83.2}, stage="eval")     # MLflow key eval/aid_oa_tr50 (roma.metric_names)
    tr.end("finished" | "failed" | "cancelled", reason)    # MLflow status FINISHED | FAILED | KILLED
    pretrain(cfg, run_dir, hooks=TrackingHooks(tr, cfg))   # the training loop's reports -> MLflow

Exactly-once step metrics across restarts: a resumed run recomputes the steps after its checkpoint;
`log_step` drops every step <= max(checkpoint step, the last step already in MLflow), so steps logged
before a crash are neither repeated nor lost. Step metrics are buffered and written in batches.

Stores that are down or corrupt: store_problem(uri) looks once, with a short timeout (an SQLite
file opened read-only: is it an SQLite database with MLflow's tables; a server: does /health
answer), and says why the store cannot be used, naming the URI. The launcher asks it before it
plans anything as launchable (roma.launch.plan.check_stores), `status` reports it, and
Tracker.open raises TrackingStoreError with the same line in a job. Inside jobs MLflow's HTTP
retries are bounded (MLFLOW_HTTP_REQUEST_MAX_RETRIES / _TIMEOUT, set unless the user set them):
its default backoff waits minutes per call for a server that is down. require_store(uri) is for
readers (analysis): an SQLite file that does not exist is an error, never created.

Names: metrics are logged under grouped keys (train/loss, val/loss, eval/aid_oa_tr50: roma.metric_names,
the one mapping), so MLflow's chart view falls into sections; the batch layout of each start is a
param, not a metric. The experiment is tagged as a model-training one (EXPERIMENT_KIND_TAG), so
MLflow 3's UI opens it on its runs, not on the GenAI traces view.

Concurrency: the default store is SQLite (<output_root>/<experiment>/mlflow.db); every store call
is retried with backoff on "database is locked", and the experiment is created once (a racing
creator's experiment is reused). Many concurrent jobs on a shared file system: use `mlflow server`.
"""
from __future__ import annotations

import contextlib
import fcntl
import functools
import logging
import random
import subprocess
import time
from pathlib import Path
from typing import Any, Callable, TypeVar

from roma import atomic
from roma.config import RunConfig, flatten
from roma.metric_names import candidates, mlflow_key
from roma.naming import run_name
from roma.train.hooks import TrainHooks

log = logging.getLogger(__name__)
T = TypeVar("T")
RUN_ID_FILE = "mlflow_run_id"  # beside last.pt: the run is reused even if it died before a checkpoint
_MAX_PARAM_LEN = 6000
_BATCH = 900  # MLflow accepts at most 1000 metrics per log_batch
# our run states (status.json) -> MLflow run status; the `state` tag holds ours
MLFLOW_STATUS = {"pending": "RUNNING", "running": "RUNNING", "requeued": "SCHEDULED", "finished": "FINISHED",
                 "failed": "FAILED", "cancelled": "KILLED", "interrupted": "KILLED"}
FAILURE_TAGS = ("failure_reason", "failure_stage")  # cleared when a retry finishes
LAYOUT_FACTS = ("world_size", "device_batch", "accum_steps")  # how a start cut the global batch
# MLflow 3's UI reads this experiment tag to choose its view; "custom_model_development" is its
# "Machine learning" kind (training runs), where an untagged experiment may open on GenAI traces
# (mlflow/server/js: ExperimentKind.CUSTOM_MODEL_DEVELOPMENT, mlflow/demo/generators/traces.py).
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"


def tracking_uri(cfg: RunConfig) -> str:
    """cfg.tracking_uri, or the default SQLite store of the experiment (the launcher and UI use this too)."""
    return cfg.tracking_uri or f"sqlite:///{Path(cfg.output_root) / cfg.experiment / 'mlflow.db'}"


def store_of(runs: list[RunConfig]) -> tuple[str, str]:
    """(tracking URI, experiment) that a spec's runs share: where `launch.py ui` and
    `analysis/fit_scaling.py SPEC` read them. ValueError when they are spread over several."""
    if not runs:
        raise ValueError("the spec has no runs")
    uris = sorted({tracking_uri(c) for c in runs})
    exps = sorted({c.experiment for c in runs})
    if len(uris) > 1 or len(exps) > 1:
        raise ValueError(f"the spec's runs use {len(uris)} tracking stores ({', '.join(uris)}) and "
                         f"{len(exps)} experiments ({', '.join(exps)}); name one with --set or --only")
    return uris[0], exps[0]


# ---------------------------------------------------------------- is the store there?
PROBE_TIMEOUT_S = 5.0
HTTP_BOUNDS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
               "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}  # worst case about a minute per call, not minutes


class TrackingStoreError(RuntimeError):
    """The MLflow tracking store cannot be used; the message names the URI and the cause."""


def bound_http_retries() -> None:
    """MLflow's HTTP retries bounded (a server that is down fails a call in about a minute)."""
    import os

    for k, v in HTTP_BOUNDS.items():
        os.environ.setdefault(k, v)


def sqlite_path(uri: str) -> Path | None:
    """The database file of an sqlite:/// tracking URI (None for any other kind of store)."""
    return Path(uri[len("sqlite:///"):]) if uri.startswith("sqlite:///") else None


def never_tracked(uri: str) -> bool:
    """An SQLite store whose file does not exist yet: nothing was ever tracked there (and reading it
    through MLflow would create it)."""
    db = sqlite_path(uri)
    return db is not None and not db.exists()


def _sqlite_problem(db: Path, timeout_s: float) -> str | None:
    import sqlite3

    try:
        con = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=timeout_s)
        try:
            tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        finally:
            con.close()
    except sqlite3.Error as e:
        if "locked" in str(e):  # another job writes: the store is there
            return None
        return f"{db} is not a readable SQLite database ({e}); move it aside to start a new store"
    if tables and not {"experiments", "runs"} <= tables:
        return f"{db} is an SQLite database but not an MLflow store (no experiments/runs tables)"
    return None


def _http_problem(uri: str, timeout_s: float) -> str | None:
    import socket
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout_s):
            return None
    except urllib.error.HTTPError as e:
        return None if e.code < 500 else f"the tracking server answered HTTP {e.code} on /health"
    except (urllib.error.URLError, OSError, socket.timeout) as e:
        cause = getattr(e, "reason", e)
        return f"the tracking server did not answer within {timeout_s:g} s ({cause})"


def store_problem(uri: str, timeout_s: float = PROBE_TIMEOUT_S) -> str | None:
    """Why the MLflow store at `uri` cannot be used, from one quick look; None when it can (or when
    its kind is not one this looks at). A missing SQLite file is fine: the first job creates it."""
    db = sqlite_path(uri)
    if db is not None:
        if db.exists():
            problem = _sqlite_problem(db, timeout_s)
        else:
            problem = atomic.writable_problem(db.parent)
        return f"MLflow store {uri}: {problem}" if problem else None
    if uri.startswith(("http://", "https://")):
        problem = _http_problem(uri, timeout_s)
        return f"MLflow store {uri}: {problem}" if problem else None
    return None


def require_store(uri: str, timeout_s: float = PROBE_TIMEOUT_S) -> None:
    """For command-line readers of finished runs (analysis/fit_scaling.py): exit with the named
    error unless the store is there and usable. An SQLite file that does not exist is a mistyped
    URI, and is not created (MLflow would create an empty store and report no experiment)."""
    problem = (f"MLflow store {uri}: no such file {sqlite_path(uri)} (mistyped? nothing was created)"
               if never_tracked(uri) else store_problem(uri, timeout_s))
    if problem:
        raise SystemExit(f"error: {problem}")


# A saved view of the experiment's runs page (MLflow 3's "shared view": the experiment tag
# mlflow.sharedViewState.<key>, opened by the URL parameter viewStateShareKey=<key>): its runs only,
# all of them shown, the charts narrowed to the training and held-out loss curves.
VIEW_TAG_PREFIX = "mlflow.sharedViewState."
LOSS_CHARTS = "^(train|val)/loss$"  # the chart view's search box is a case-insensitive regex on metric keys


def compare_view(mlflow_run_ids: list[str], name: str) -> tuple[str, str]:
    """(share key, tag value) of the view comparing these MLflow runs' loss curves side by side.

    The value is MLflow 3.17's saved-view envelope ({name, createdAt, updatedAt, state}); state holds
    the runs page's search facets (searchFilter) and chart settings (runsHiddenMode, chartsSearchFilter),
    the keys MLflow's own "share view" writes. The key is the same for the same runs."""
    import hashlib
    import json

    ids = sorted(mlflow_run_ids)
    key = "roma-" + hashlib.sha256(",".join(ids).encode()).hexdigest()[:12]
    section = "roma-loss-curves"
    # one section, two columns: the training loss and the held-out loss side by side (MLflow's own
    # layout would put them in two sections, a third of the width each); the other metrics still get
    # their generated charts, hidden by the chart filter until it is cleared
    charts = [{"uuid": f"roma-{name.replace('/', '-')}", "type": "LINE", "metricSectionId": section,
               "metricKey": name, "selectedMetricKeys": [name], "isGenerated": False,
               "deleted": False, "runsCountToCompare": max(10, len(ids)), "scaleType": "linear",
               "xAxisKey": "step", "xAxisScaleType": "linear", "selectedXAxisMetricKey": "", "yAxisKey": "metric",
               "yAxisExpressions": [], "lineSmoothness": 0, "ignoreOutliers": False, "useGlobalXaxisKey": True,
               "useGlobalLineSmoothing": True, "range": {}}
              for name in (mlflow_key("loss"), mlflow_key("val_loss"))]
    state = {"searchFilter": "attributes.run_id IN ({})".format(", ".join(f"'{i}'" for i in ids)),
             "runsHiddenMode": "SHOWALL", "chartsSearchFilter": LOSS_CHARTS, "hideEmptyCharts": True,
             "compareRunCharts": charts, "isAccordionReordered": True,
             "compareRunSections": [{"uuid": section, "name": "loss curves", "display": True, "isReordered": False,
                                     "deleted": False, "isGenerated": False, "columns": 2, "cardHeight": 420}]}
    now = int(time.time() * 1000)
    return key, json.dumps({"name": name, "createdAt": now, "updatedAt": now, "state": json.dumps(state)})


def publish_compare_view(uri: str, experiment: str, run_ids: tuple[str, ...] | list[str] = ()
                         ) -> tuple[str, str, list[str]] | None:
    """Write the compare view of the newest MLflow run of each config (run_ids: the configs' ids, the
    MLflow tag `run_id`; empty: every run of the experiment) into the store: (experiment id, share key,
    run names), or None when there is no such run yet. Also tags the experiment for MLflow's UI (an
    experiment from an older store included). Used by the launcher and `launch.py ui`."""
    if never_tracked(uri):
        return None  # nothing tracked yet (no mlflow import, no store created)
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = retry(lambda: client.get_experiment_by_name(experiment), "get experiment")
    if exp is None:
        return None
    mark_training_experiment(client, exp)
    newest: dict[str, Any] = {}
    for r in retry(lambda: client.search_runs([exp.experiment_id], max_results=5000,
                                              order_by=["attributes.start_time DESC"]), "search runs"):
        cfg_id = r.data.tags.get("run_id") or r.info.run_id
        if (not run_ids or cfg_id in run_ids) and cfg_id not in newest:  # a --force rerun leaves older runs
            newest[cfg_id] = r
    if not newest:
        return None
    ordered = ([newest[i] for i in run_ids if i in newest] if run_ids else  # the spec's order
               sorted(newest.values(), key=lambda r: r.info.start_time))
    names = [r.info.run_name for r in ordered]
    key, value = compare_view([r.info.run_id for r in newest.values()], f"loss curves: {experiment} ({len(names)} runs)")
    retry(lambda: client.set_experiment_tag(exp.experiment_id, VIEW_TAG_PREFIX + key, value), "tag experiment")
    return exp.experiment_id, key, names


def _is_locked(e: BaseException) -> bool:
    text = f"{type(e).__name__}: {e}".lower()
    return "database is locked" in text or "database table is locked" in text


def retry(fn: Callable[[], T], what: str = "mlflow call", tries: int = 10, base_s: float = 0.2) -> T:
    """fn(), retried with jittered exponential backoff while SQLite says the database is locked."""
    for attempt in range(tries):
        try:
            return fn()
        except Exception as e:
            if not _is_locked(e) or attempt == tries - 1:
                raise
            delay = min(base_s * 2**attempt, 10.0) * (0.5 + random.random())
            log.warning("%s: database is locked, retry %d/%d in %.1fs", what, attempt + 1, tries, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """`git describe --always --dirty` of the source tree, else the installed package version."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty", "--tags"], cwd=here,
                             capture_output=True, text=True, timeout=10)
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        from importlib.metadata import version

        return version("roma")
    except Exception:  # noqa: BLE001
        return "unknown"


def run_params(cfg: RunConfig, **extra: Any) -> dict[str, str]:
    """Flattened RunConfig + extras (param_count, data_size, code_version, data_checksum) as strings."""
    plain = cfg.to_dict()
    for where in ("sweep", "output_root", "tracking_uri"):  # tags / machine-specific, not what a run computes
        plain.pop(where, None)
    params = {**flatten(plain), **extra}
    return {k: str(v)[:_MAX_PARAM_LEN] for k, v in params.items()}


@contextlib.contextmanager
def _file_lock(path: Path):
    """An exclusive flock on `path` (processes on one machine; use a server across machines)."""
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _get_or_create_experiment(client, name: str, artifact_location: str | None) -> str:
    exp = retry(lambda: client.get_experiment_by_name(name), "get experiment")
    if exp is not None:
        mark_training_experiment(client, exp)
        return exp.experiment_id
    try:
        return retry(lambda: client.create_experiment(name, artifact_location=artifact_location,
                                                      tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND}), "create experiment")
    except Exception:  # another job created it between our lookup and create
        exp = retry(lambda: client.get_experiment_by_name(name), "get experiment")
        if exp is None:
            raise
        return exp.experiment_id


def mark_training_experiment(client, exp) -> None:
    """Tag an experiment (one from an older store, too) as training runs for MLflow's UI, once."""
    if exp.tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:
        retry(lambda: client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND),
              "tag experiment")


class Tracker:
    """Writes one training run's params, step metrics, single metrics, tags and artifacts."""

    def __init__(self, client, run_id: str, log_after: int = -1):
        self.client, self.run_id = client, run_id
        self.log_after = log_after  # steps <= this are already in MLflow (or are being replayed)
        self._buffer: list[tuple[int, dict[str, float]]] = []

    # ---------------------------------------------------------------- opening
    @classmethod
    def open(cls, cfg: RunConfig, run_dir: Path, last_step: int = 0) -> "Tracker":
        """Create the run, or reopen the one whose id is recorded in run_dir (file mlflow_run_id)."""
        from mlflow.tracking import MlflowClient

        uri = tracking_uri(cfg)
        bound_http_retries()
        problem = store_problem(uri)
        if problem:  # one line, before MLflow's own traceback (or minutes of retries)
            raise TrackingStoreError(problem)
        artifact_location, lock = None, contextlib.nullcontext()
        db = sqlite_path(uri)
        if db is not None:
            db.parent.mkdir(parents=True, exist_ok=True)
            # artifacts beside the store, not in ./mlruns of whatever folder the job started in
            artifact_location = (db.parent / "mlartifacts").resolve().as_uri()
            lock = _file_lock(db.with_name(db.name + ".lock"))
        with lock:  # one process at a time creates the tables (schema migration) and the experiment
            client = MlflowClient(tracking_uri=uri)
            exp_id = _get_or_create_experiment(client, cfg.experiment, artifact_location)
        id_file = Path(run_dir) / RUN_ID_FILE
        run_id = id_file.read_text().strip() if id_file.exists() else None
        if run_id:
            try:
                run = retry(lambda: client.get_run(run_id), "get run")
            except Exception as e:
                raise RuntimeError(f"MLflow run {run_id} recorded for {run_dir} is not in the store {uri} "
                                   f"(moved store or changed tracking_uri?): {e}") from e
            if run.info.experiment_id != exp_id:
                raise ValueError(f"MLflow run {run_id} (from {run_dir}) belongs to experiment "
                                 f"{run.info.experiment_id}, not {cfg.experiment!r} ({exp_id})")
            if run.info.status != "RUNNING":
                retry(lambda: client.update_run(run_id, status="RUNNING"), "reopen run")
            retry(lambda: client.set_tag(run_id, "state", "running"), "set state tag")
            previous = run.data.tags.get("code_version")
            if previous != code_version():  # resumed under other code: say so, keep where it began
                retry(lambda: client.set_tag(run_id, "code_version", code_version()), "set code tag")
                if previous and "code_version_start" not in run.data.tags:
                    retry(lambda: client.set_tag(run_id, "code_version_start", previous), "set code tag")
        else:
            tags = {"spec": cfg.experiment, "run_id": cfg.run_id, "state": "running",
                    "code_version": code_version(), "mlflow.runName": run_name(cfg),
                    **{f"sweep.{k}": str(v) for k, v in cfg.sweep}}
            run = retry(lambda: client.create_run(exp_id, tags=tags, run_name=run_name(cfg)), "create run")
            run_id = run.info.run_id
            atomic.write_text(id_file, run_id + "\n")
        tr = cls(client, run_id)
        tr.log_after = max(last_step, tr.last_logged_step())
        return tr

    def last_logged_step(self, name: str = "loss") -> int:
        return max((s for s, _ in self.metric_history(name)), default=-1)

    # ---------------------------------------------------------------- logging
    def log_params(self, params: dict[str, Any]) -> None:
        """Log params not yet in the run (a resumed run keeps its original values)."""
        from mlflow.entities import Param

        have = retry(lambda: self.client.get_run(self.run_id), "get run").data.params
        new = [Param(k, str(v)[:_MAX_PARAM_LEN]) for k, v in params.items() if k not in have]
        for i in range(0, len(new), 100):  # MLflow: at most 100 params per batch
            retry(lambda: self.client.log_batch(self.run_id, params=new[i:i + 100]), "log params")

    def log_step(self, step: int, metrics: dict[str, float]) -> None:
        """Buffer step metrics; steps already logged (before a restart) are dropped."""
        if step > self.log_after:
            self._buffer.append((step, {mlflow_key(k): float(v) for k, v in metrics.items()}))
            self.log_after = step

    def flush(self) -> None:
        from mlflow.entities import Metric

        if not self._buffer:
            return
        now = int(time.time() * 1000)
        ms = [Metric(k, v, now, s) for s, d in self._buffer for k, v in d.items()]
        for i in range(0, len(ms), _BATCH):
            retry(lambda: self.client.log_batch(self.run_id, metrics=ms[i:i + _BATCH]), "log metrics")
        self._buffer.clear()

    def log_metrics(self, metrics: dict[str, float], step: int = 0, *, stage: str) -> None:
        """Single-value metrics: stage "train" (the pretraining's totals: final loss, compute) or "eval"."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        ms = [Metric(mlflow_key(k, stage), float(v), now, step) for k, v in metrics.items()]
        if ms:
            retry(lambda: self.client.log_batch(self.run_id, metrics=ms), "log metrics")

    def set_tags(self, tags: dict[str, Any]) -> None:
        from mlflow.entities import RunTag

        retry(lambda: self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()]), "set tags")

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        retry(lambda: self.client.log_artifact(self.run_id, str(path), artifact_path), "log artifact")

    def log_text(self, text: str, artifact_file: str) -> None:
        retry(lambda: self.client.log_text(self.run_id, text, artifact_file), "log text")

    def metric_history(self, name: str, stage: str = "train") -> list[tuple[int, float]]:
        """(step, value) of a plain metric name, under its grouped key or (a run begun before the
        grouping) its plain one."""
        points: dict[int, float] = {}
        for key in reversed(candidates(name, stage)):  # the grouped key's values win
            hist = retry(lambda: self.client.get_metric_history(self.run_id, key), "metric history")
            points.update((m.step, m.value) for m in hist)
        return sorted(points.items())

    def end(self, state: str = "finished", reason: str | None = None, stage: str | None = None) -> None:
        """Flush and close the run: state tag finished|failed|cancelled, MLflow status FINISHED|FAILED|KILLED.

        A failure records `failure_reason` (and `failure_stage`: pretrain | eval); a finished run
        drops the failure tags a previous attempt left."""
        self.flush()
        set_terminal_state(self.client, self.run_id, state, reason, stage)


def set_terminal_state(client, run_id: str, state: str, reason: str | None = None, stage: str | None = None) -> None:
    """Tags and MLflow status of `run_id` for one of our states (MLFLOW_STATUS)."""
    tags = {"state": state}
    if reason:
        tags["failure_reason"] = reason[:4000]
    if stage:
        tags["failure_stage"] = stage
    from mlflow.entities import RunTag

    retry(lambda: client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()]), "set tags")
    if state == "finished":
        have = retry(lambda: client.get_run(run_id), "get run").data.tags
        for k in FAILURE_TAGS:
            if k in have:
                retry(lambda: client.delete_tag(run_id, k), "clear failure tag")
    status = MLFLOW_STATUS[state]
    if status in ("RUNNING", "SCHEDULED"):  # not ended: no end time
        retry(lambda: client.update_run(run_id, status=status), "reopen run")
    else:
        retry(lambda: client.set_terminated(run_id, status), "end run")


def mark_state(cfg: RunConfig, state: str, reason: str | None = None) -> None:
    """Bring the config's MLflow run(s) to `state` from outside the job (a run killed before it could
    record its end, a cancelled SLURM job). Best effort: the run may not exist yet or the store may be
    locked; status.json stays the launcher's source of truth."""
    uri = tracking_uri(cfg)
    if never_tracked(uri):
        return  # do not create a store just to tag nothing
    bound_http_retries()
    problem = store_problem(uri)
    if problem:
        log.warning("could not set the MLflow state of %s: %s", cfg.run_id, problem)
        return
    try:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=uri)
        exp = client.get_experiment_by_name(cfg.experiment)
        if exp is None:
            return
        for run in client.search_runs([exp.experiment_id], f"tags.run_id = '{cfg.run_id}'"):
            # an interrupted job's own run ended KILLED (roma.run.execute) just before it was requeued
            if run.info.status == "RUNNING" or state in ("running", "requeued"):
                set_terminal_state(client, run.info.run_id, state, reason)
    except Exception as e:  # noqa: BLE001 - tagging must never turn a finished run into a failure
        log.warning("could not set the MLflow state of %s: %s", cfg.run_id, e)


class TrackingHooks(TrainHooks):
    """The training loop's reports -> one MLflow run (params once, step metrics exactly once)."""

    def __init__(self, tracker: Tracker, cfg: RunConfig):
        self.tracker, self.cfg = tracker, cfg

    def on_start(self, step: int, facts: dict[str, Any]) -> None:
        self.tracker.log_after = max(self.tracker.log_after, step)
        # params are written once (the first start: its layout in world_size, device_batch, accum_steps);
        # each start also records its layout in a param of its own, layout.step<N>, so a resume on
        # another number of devices (same global batch) is on record without a counter as a metric
        layout = {k: facts[k] for k in LAYOUT_FACTS if k in facts}
        extra = {f"layout.step{step}": " ".join(f"{k}={v}" for k, v in layout.items())} if layout else {}
        self.tracker.log_params(run_params(self.cfg, code_version=code_version(), **facts, **extra))

    def on_log(self, step: int, metrics: dict[str, float]) -> None:
        self.tracker.log_step(step, metrics)

    def on_checkpoint(self, step: int) -> None:
        self.tracker.flush()


def plot_loss_curve(points: list[tuple[int, float]], path: Path, title: str = "") -> Path:
    """A loss-vs-step PNG (log y) written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    fig, ax = plt.subplots(figsize=(6, 4))
    if points:
        steps, values = zip(*points)
        ax.plot(steps, values, lw=1)
        if min(values) > 0:
            ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic.replacing(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return path
