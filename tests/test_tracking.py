"""MLflow tracking: one run resumed by id, exactly-once step metrics, lock retries, concurrent writers."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from roma import tracking
from roma.config import ModelConfig, RunConfig, TrainConfig


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """One output root (one SQLite store) for the module: creating a store's tables takes seconds."""
    return tmp_path_factory.mktemp("tracking")


def _cfg(root: Path, **kw) -> RunConfig:
    return RunConfig(experiment="tracksuite", output_root=str(root), model=ModelConfig(name="roma_micro_tiny"),
                     train=TrainConfig(seed=1), **kw)


def _loss_steps(tr) -> list[int]:
    return [s for s, _ in tr.metric_history("loss")]


def test_resumed_run_logs_each_step_once(store, tmp_path):
    cfg = _cfg(store)
    rd = tmp_path / "run"
    tr = tracking.Tracker.open(cfg, rd)
    tr.log_params(tracking.run_params(cfg, param_count=123, data_checksum="abc"))
    for s in range(1, 6):
        tr.log_step(s, {"loss": 1.0 / s, "lr": 0.1})
    tr.flush()  # steps 1-5 reached MLflow, but the last checkpoint was at step 3 when the job died

    again = tracking.Tracker.open(cfg, rd, last_step=3)  # id from run_dir
    assert again.run_id == tr.run_id
    again.log_params(tracking.run_params(cfg, param_count=123, data_checksum="abc"))
    for s in range(4, 9):  # the resumed job recomputes 4, 5 and goes on
        again.log_step(s, {"loss": 1.0 / s, "lr": 0.1})
    again.end("finished")
    assert _loss_steps(again) == list(range(1, 9))
    run = again.client.get_run(again.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["state"] == "finished"
    assert run.data.tags["run_id"] == cfg.run_id and run.data.tags["spec"] == "tracksuite"
    assert run.data.params["model.name"] == "roma_micro_tiny" and run.data.params["param_count"] == "123"
    assert run.data.params["train.seed"] == "1"
    assert (store / "tracksuite" / "mlflow.db").exists()  # the default store


def test_new_run_when_no_id_and_experiment_reused(store, tmp_path):
    cfg = _cfg(store)
    a = tracking.Tracker.open(cfg, tmp_path / "a")
    b = tracking.Tracker.open(cfg, tmp_path / "b")
    assert a.run_id != b.run_id
    assert a.client.get_run(a.run_id).info.experiment_id == b.client.get_run(b.run_id).info.experiment_id


def test_retry_on_database_locked(monkeypatch):
    monkeypatch.setattr(tracking.time, "sleep", lambda s: None)
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise RuntimeError("(sqlite3.OperationalError) database is locked")
        return "ok"

    assert tracking.retry(flaky) == "ok" and len(calls) == 3
    with pytest.raises(ValueError, match="other"):
        tracking.retry(lambda: (_ for _ in ()).throw(ValueError("other")))
    with pytest.raises(RuntimeError, match="locked"):
        tracking.retry(lambda: (_ for _ in ()).throw(RuntimeError("database is locked")), tries=2)


def test_experiment_created_by_a_racing_job_is_reused():
    exp = SimpleNamespace(experiment_id="7")
    answers = iter([None, exp])

    class Client:
        def get_experiment_by_name(self, name):
            return next(answers)

        def create_experiment(self, name, artifact_location=None):
            raise RuntimeError(f"Experiment '{name}' already exists")

    assert tracking._get_or_create_experiment(Client(), "x", None) == "7"


def test_loss_curve_png(tmp_path):
    path = tracking.plot_loss_curve([(1, 2.0), (2, 1.5), (3, 1.2)], tmp_path / "loss.png", title="t")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


_WRITER = """
import sys
from pathlib import Path
from roma.config import RunConfig, TrainConfig
from roma.tracking import Tracker
cfg = RunConfig(experiment="concurrent", output_root=sys.argv[1], train=TrainConfig(seed=int(sys.argv[2])))
tr = Tracker.open(cfg, Path(sys.argv[1]) / sys.argv[2])
for s in range(1, 41):
    tr.log_step(s, {"loss": 1.0 / s})
    if s % 2 == 0:
        tr.flush()
tr.end("finished")
"""


@pytest.mark.slow
def test_concurrent_writers_share_the_sqlite_store(tmp_path):
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, str(tmp_path), str(i)], stderr=subprocess.PIPE,
                              text=True) for i in range(4)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-2000:]
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking.tracking_uri(RunConfig(experiment="concurrent", output_root=str(tmp_path))))
    runs = client.search_runs([client.get_experiment_by_name("concurrent").experiment_id])
    assert len(runs) == 4
    for r in runs:
        assert sorted(m.step for m in client.get_metric_history(r.info.run_id, "train/loss")) == list(range(1, 41))
