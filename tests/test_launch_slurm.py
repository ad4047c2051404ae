"""The launcher against a real one-node SLURM cluster (slurm/local, started as root in CI).

Run with: pytest -m slurm tests/test_launch_slurm.py. The fixtures come from tests/conftest_slurm.py:
`slurm_cluster` (facts about the running cluster, including its partition) and `submitit_folder`
(a fresh folder per test: job ids restart at 1 when the cluster state is wiped).
"""
from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slurm

try:
    from conftest_slurm import slurm_cluster, submitit_folder  # noqa: F401  (fixtures)
except ImportError as e:  # pragma: no cover - the SLURM fixture module is absent
    pytest.skip(f"tests/conftest_slurm.py is not importable: {e}", allow_module_level=True)

from conftest_slurm import wait_for
from roma.launch import cli
from roma.launch.status import read_status, run_dir
from roma.spec import REPO_ROOT as REPO
from roma.spec import load_spec

FAKE = textwrap.dedent('''
    import os, time
    from roma.launch.status import run_dir, update_progress

    def _log(cfg, what):
        with open(os.environ["FAKE_LOG"], "a") as fh:
            fh.write(f"{cfg.run_id} {what}\\n")

    def ok(cfg, hooks=None):
        _log(cfg, "start")
        return {"step": 10, "final_loss": 0.25}

    def slow(cfg, hooks=None):
        """First attempt: write a checkpoint, then work until interrupted; a resumed attempt ends."""
        ckpt = run_dir(cfg) / "last.pt"
        if ckpt.exists():
            _log(cfg, "resume")
            return {"step": 20, "final_loss": 0.1}
        _log(cfg, "start")
        ckpt.write_text("ckpt")
        for step in range(1, 600):
            update_progress(run_dir(cfg), step, 1.0 / step)
            time.sleep(0.5)
        return {"step": 600, "final_loss": 0.0}
''')


def _partition(facts) -> str:
    return facts["partition"] if isinstance(facts, dict) else facts.partition


@pytest.fixture
def launch_env(tmp_path, monkeypatch, slurm_cluster, submitit_folder, aid_root):
    """A one-run spec (optionally with more settings), a cluster profile for the test partition."""
    (tmp_path / "fake_exec.py").write_text(FAKE)
    log = tmp_path / "calls.log"
    log.touch()
    # the job inherits the submitting environment (sbatch --export=ALL): fakes + log are found there
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("FAKE_LOG", str(log))
    monkeypatch.syspath_prepend(str(tmp_path))
    conf = slurm_cluster.state_dir / "etc" / "slurm.conf"  # the clients (sbatch, sacct) need it too
    if "SLURM_CONF" not in os.environ and conf.exists():
        monkeypatch.setenv("SLURM_CONF", str(conf))
    # slurm/profiles/local.yaml, on the partition the running cluster reports
    profile = tmp_path / "test_cluster.yaml"
    local = yaml.safe_load((REPO / "slurm" / "profiles" / "local.yaml").read_text())
    profile.write_text(yaml.safe_dump({**local, "partition": _partition(slurm_cluster)}))

    class Env:
        def __init__(self, **settings):
            self.spec = tmp_path / "slurm_micro.yaml"
            body = {"base": "micro", "output_root": str(tmp_path / "out"), "data.subset": 200,
                    "train": {"max_steps": 30, "global_batch": 8, "ckpt_every_steps": 10, "log_every_steps": 10},
                    "eval.probes": []}
            for k, v in settings.items():
                body[k] = v
            self.spec.write_text(yaml.safe_dump(body))
            self.args = [str(self.spec), "--profile", str(profile), "--executor", "slurm",
                         "--submitit-folder", str(submitit_folder)]
            self.cfg = load_spec(self.spec).runs[0]

        def launch(self, *extra: str) -> int:
            return cli.main([*self.args, *extra])

        def status(self) -> dict:
            return read_status(run_dir(self.cfg)) or {}

        def calls(self) -> list[str]:
            return log.read_text().split()[1::2]

        def requeued(self) -> bool:
            """submitit logged a requeue of this run's job (the interrupt came before the end)."""
            return any("Requeued job" in p.read_text() for p in Path(submitit_folder).glob("*_log.*"))

        def job(self):
            import submitit

            return submitit.SlurmJob(submitit_folder, str(self.status()["job_id"]))

    return Env


def test_submit_finish_and_relaunch_skips(launch_env, capsys):
    env = launch_env()
    assert env.launch("--execute", "fake_exec:ok") == 0
    assert env.status()["state"] == "pending" and env.status()["job_id"]
    wait_for(lambda: env.status()["state"] == "finished", 120, "the job to finish")
    assert env.calls() == ["start"]
    capsys.readouterr()
    assert env.launch("--execute", "fake_exec:ok") == 0
    out = capsys.readouterr().out
    assert "skip (finished)" in out and "submitted" not in out


def test_interrupted_job_is_requeued_and_resumes(launch_env):
    env = launch_env()
    assert env.launch("--execute", "fake_exec:slow") == 0
    wait_for(lambda: (env.status().get("step") or 0) >= 3, 120, "the job to run a few steps")
    job_id = str(env.status()["job_id"])
    env.job()._interrupt()  # preemption: SIGTERM (ignored) then USR2 -> checkpoint() -> requeue
    # in the queue (a requeued attempt starts after cred_expire, 10 s): requeued, with its job id
    waiting = wait_for(lambda: (st := env.status())["state"] in ("requeued", "finished") and st, 60,
                       "the run to say requeued")
    assert waiting["state"] == "requeued" and waiting["job_id"] == job_id and job_id in waiting["reason"]
    wait_for(lambda: env.status()["state"] == "finished", 180, "the requeued job to finish")
    assert env.calls() == ["start", "resume"] and env.requeued()


def test_cancelled_job_shows_cancelled(launch_env, capsys):
    env = launch_env()
    assert env.launch("--execute", "fake_exec:slow") == 0
    wait_for(lambda: env.status()["state"] == "running", 120, "the job to start")
    env.job().cancel()

    def shown_cancelled() -> bool:
        capsys.readouterr()
        cli.main(["status", str(env.spec)])
        row = [line for line in capsys.readouterr().out.splitlines() if line.startswith(env.cfg.run_id)]
        return bool(row) and " cancelled " in row[0]

    wait_for(shown_cancelled, 60, "launch.py status to show the run cancelled", every=2)
    assert env.status()["state"] == "cancelled"


# ---- with the real pretraining (roma.run.execute): metrics in MLflow, requeue into the same run

def _mlflow_run(cfg):
    from mlflow.tracking import MlflowClient

    from roma.tracking import tracking_uri

    client = MlflowClient(tracking_uri(cfg))
    exp = client.get_experiment_by_name(cfg.experiment)
    runs = client.search_runs([exp.experiment_id], f"tags.run_id = '{cfg.run_id}'")
    assert len(runs) == 1, f"expected one MLflow run for {cfg.run_id}, found {len(runs)}"
    steps = [m.step for m in client.get_metric_history(runs[0].info.run_id, "train/loss")]
    return runs[0], steps


def _assert_steps_complete(steps: list[int], every: int, max_steps: int) -> None:
    assert len(steps) == len(set(steps)), f"repeated steps in the loss history: {sorted(steps)}"
    steps = sorted(steps)
    assert all(b - a == every for a, b in zip(steps, steps[1:])), f"lost steps: {steps}"
    assert steps[-1] >= max_steps - every


def test_micro_spec_runs_on_cluster_into_mlflow(launch_env):
    pytest.importorskip("roma.run", reason="roma.run.execute (pretraining) is not in this checkout")
    env = launch_env()
    assert env.launch() == 0
    wait_for(lambda: env.status()["state"] in ("finished", "failed"), 600, "the micro run to end")
    assert env.status()["state"] == "finished", env.status()
    run, steps = _mlflow_run(env.cfg)
    assert run.data.tags["state"] == "finished" and run.info.run_name == "roma_micro_tiny-200-seed0"
    _assert_steps_complete(steps, 10, 30)


def test_micro_requeue_resumes_same_mlflow_run(launch_env):
    pytest.importorskip("roma.run", reason="roma.run.execute (pretraining) is not in this checkout")
    env = launch_env(train={"max_steps": 60, "global_batch": 8, "ckpt_every_steps": 10, "log_every_steps": 10})
    assert env.launch() == 0
    ckpt = run_dir(env.cfg) / "last.pt"
    wait_for(ckpt.exists, 300, "the first checkpoint")
    env.job()._interrupt()
    wait_for(lambda: env.status()["state"] in ("finished", "failed"), 600, "the requeued run to end")
    assert env.status()["state"] == "finished", env.status()
    assert env.requeued()
    run, steps = _mlflow_run(env.cfg)
    assert run.data.tags["state"] == "finished"
    _assert_steps_complete(steps, 10, 60)
