"""Multi-node DDP through the real launcher and submitit, on the two-node SLURM cluster of
slurm/local (`start.sh --nodes 2`: slurmd roma-n1 and roma-n2, each in its own network namespace,
address and hostname, one slurmctld). One task per node, CPU DDP with gloo; the rendezvous is the
one a real cluster uses (MASTER_ADDR = the first node's hostname, MASTER_PORT from the job id,
ranks from submitit).

Run with: pytest -m slurm tests/test_slurm_multinode.py (root; CI starts the cluster itself).

What one machine cannot show: a node that goes silent (SlurmdTimeout, 300 s here, before SLURM
marks it NODE_FAIL) within a test budget, GPUs/NCCL, and a real shared filesystem (both
"nodes" see this machine's disk). The kill test kills one rank's process instead.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slurm

from conftest_slurm import slurm_multinode, submitted_job_ids, wait_for  # noqa: E402,F401  (fixtures)
from roma.launch import cli  # noqa: E402
from roma.launch.status import read_status, run_dir  # noqa: E402
from roma.spec import REPO_ROOT as REPO  # noqa: E402
from roma.spec import load_spec  # noqa: E402

# The losses of two ranks (each the mean of half the global batch, then averaged by all-reduce)
# equal one process's mean over the whole batch up to float32 summation order: relative 1e-5 is
# ~100 float32 ulps (measured: see slurm/README.md).
LOSS_RTOL = 1e-5
FAIL_BOUND_S = 120  # a rank killed mid-run ends the job (FAILED) within this, never a hang
TRAIN = {"max_steps": 12, "global_batch": 8, "ckpt_every_steps": 4, "log_every_steps": 1}


@pytest.fixture
def mn_folder(slurm_multinode, tmp_path, monkeypatch) -> Path:
    """A fresh submitit folder; the clients (sbatch, sacct, scancel) talk to the two-node cluster."""
    monkeypatch.setenv("SLURM_CONF", str(slurm_multinode.slurm_conf))
    folder = tmp_path / "submitit"
    folder.mkdir()
    yield folder
    ids = submitted_job_ids(folder)
    if ids:  # a failed test must not leave jobs holding the nodes
        subprocess.run(["scancel", *ids], capture_output=True, timeout=30)


@pytest.fixture
def mn_env(tmp_path, slurm_multinode, mn_folder, aid_root):
    """A one-run micro spec on a profile of 2 nodes x 1 CPU task (slurm/profiles/local.yaml otherwise)."""
    profile = tmp_path / "two_nodes.yaml"
    local = yaml.safe_load((REPO / "slurm" / "profiles" / "local.yaml").read_text())
    profile.write_text(yaml.safe_dump({**local, "partition": slurm_multinode.partition, "nodes": 2,
                                       "gpus_per_node": 0, "cpus_per_task": 1}))

    class Env:
        def __init__(self, name: str = "mn", **train):
            self.spec = tmp_path / f"{name}.yaml"
            body = {"base": "micro", "output_root": str(tmp_path / name), "data.subset": 200,
                    "train": {**TRAIN, **train}, "eval.probes": []}
            self.spec.write_text(yaml.safe_dump(body))
            self.cfg = load_spec(self.spec).runs[0]
            self.slurm_args = ["--profile", str(profile), "--executor", "slurm", "--submitit-folder", str(mn_folder)]

        def launch(self, *extra: str) -> int:
            return cli.main([str(self.spec), *self.slurm_args, *extra])

        def status(self) -> dict:
            return read_status(run_dir(self.cfg)) or {}

        def job_id(self) -> str:
            return str(self.status()["job_id"])

        def ended(self, timeout: float) -> dict:
            wait_for(lambda: self.status().get("state") in ("finished", "failed"), timeout, f"run {self.cfg.run_id} to end")
            return self.status()

        def task_hosts(self) -> set[tuple[str, int]]:
            """(hostname, global rank) of every task start submitit logged in this folder."""
            seen = set()
            for p in mn_folder.glob("*_log.*"):
                for host, rank in re.findall(r"hostname=([\w.-]+),.*?global_rank=(\d+)", p.read_text()):
                    seen.add((host, int(rank)))
            return seen

        def requeued(self) -> bool:
            return any("Requeued job" in p.read_text() for p in mn_folder.glob("*_log.*"))

    return Env


def _mlflow(cfg) -> tuple[dict, dict[int, float]]:
    """(params, {step: loss}) of the run's single MLflow run; fails on repeated steps."""
    from mlflow.tracking import MlflowClient

    from roma.tracking import tracking_uri

    client = MlflowClient(tracking_uri(cfg))
    exp = client.get_experiment_by_name(cfg.experiment)
    runs = client.search_runs([exp.experiment_id], f"tags.run_id = '{cfg.run_id}'")
    assert len(runs) == 1, f"expected one MLflow run for {cfg.run_id}, found {len(runs)}"
    history = client.get_metric_history(runs[0].info.run_id, "train/loss")
    steps = [m.step for m in history]
    assert len(steps) == len(set(steps)), f"steps logged more than once: {sorted(steps)}"
    return runs[0].data.params, {m.step: m.value for m in history}


def _assert_two_hosts(env) -> None:
    hosts = env.task_hosts()
    by_rank = {rank: host for host, rank in hosts}
    assert set(by_rank) == {0, 1}, f"submitit logged ranks {sorted(by_rank)}: {hosts}"
    assert by_rank[0] != by_rank[1], f"both ranks ran on {by_rank[0]}"


def test_two_nodes_train_like_one_process(mn_env):
    env = mn_env()
    assert env.launch() == 0
    assert env.ended(900)["state"] == "finished", env.status()
    _assert_two_hosts(env)
    params, losses = _mlflow(env.cfg)
    assert (params["world_size"], params["global_batch"]) == ("2", str(TRAIN["global_batch"]))
    assert sorted(losses) == list(range(1, TRAIN["max_steps"] + 1))
    # the same spec in one process (this test's process), its own output folder
    ref = mn_env("one")
    assert cli.main([str(ref.spec), "--executor", "debug"]) == 0
    ref_params, ref_losses = _mlflow(ref.cfg)
    assert ref_params["world_size"] == "1" and sorted(ref_losses) == sorted(losses)
    rel = {s: abs(losses[s] - ref_losses[s]) / abs(ref_losses[s]) for s in losses}
    print(f"max relative loss difference, 2 nodes vs 1 process: {max(rel.values()):.2e}")
    assert max(rel.values()) <= LOSS_RTOL, rel


def test_requeue_resumes_on_two_nodes_same_run(mn_env):
    import submitit

    env = mn_env(max_steps=24)
    assert env.launch() == 0
    wait_for((run_dir(env.cfg) / "last.pt").exists, 600, "the first checkpoint")
    job_id = env.job_id()
    submitit.SlurmJob(env.slurm_args[-1], job_id)._interrupt()  # TERM (ignored), then USR2 -> requeue
    assert env.ended(900)["state"] == "finished", env.status()
    assert env.requeued(), "submitit logged no requeue: the interrupt came too late"
    assert env.job_id() == job_id
    _assert_two_hosts(env)
    _, losses = _mlflow(env.cfg)
    assert sorted(losses) == list(range(1, 25)), f"lost steps: {sorted(losses)}"


def test_world_size_not_dividing_global_batch_is_refused(mn_env, mn_folder, capsys):
    env = mn_env(global_batch=7)
    assert env.launch() != 0
    err = capsys.readouterr().err
    assert "train.global_batch 7 cannot be split evenly over 2 ranks" in err, err
    assert submitted_job_ids(mn_folder) == [] and not list(mn_folder.iterdir())


def _rank_pid(conf: Path, rank: int) -> int | None:
    """The pid of the submitit task of `rank` in a job of the cluster whose SLURM_CONF is `conf`."""
    want = {f"SLURM_PROCID={rank}".encode(), f"SLURM_CONF={conf}".encode()}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes()
            env = set((proc / "environ").read_bytes().split(b"\0"))
        except OSError:
            continue
        if b"submitit.core._submit" in cmd and want <= env:
            return int(proc.name)
    return None


def slurm_multinode_addr(cluster, rank: int) -> str:
    """The address of the node that runs `rank` (one task per node, in node order)."""
    facts = (cluster.state_dir / "cluster.env").read_text()
    return re.search(r"^ADDRS=(.*)$", facts, re.M).group(1).split(",")[rank]


def test_killed_rank_fails_job_then_relaunch_resumes(mn_env, slurm_multinode, capsys):
    from roma.launch import slurm

    env = mn_env(max_steps=24)
    assert env.launch() == 0
    wait_for((run_dir(env.cfg) / "last.pt").exists, 600, "the first checkpoint")
    pid = wait_for(lambda: _rank_pid(slurm_multinode.slurm_conf, 1), 30, "rank 1's process")
    job_id = env.job_id()
    t0 = time.time()
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: slurm.job_state(job_id) == "failed", FAIL_BOUND_S, f"job {job_id} to end FAILED")
    with capsys.disabled():
        print(f"rank 1 killed -> job FAILED in {time.time() - t0:.0f} s")
    capsys.readouterr()
    assert cli.main(["status", str(env.spec)]) == 0
    row = [line for line in capsys.readouterr().out.splitlines() if line.startswith(env.cfg.run_id)]
    assert row and " failed " in row[0], row
    # the reason: rank 0's own error naming the lost peer (gloo: "Read error [<rank 1's address>]"),
    # or, when rank 0 was killed before it could write it, the job's end from sacct
    reason = env.status()["reason"]
    peer = slurm_multinode_addr(slurm_multinode, 1)
    assert f"[{peer}]" in reason or f"SLURM job {job_id} ended: failed" in reason, reason
    step_at_kill = env.status().get("step") or 0
    assert env.launch("--retry-failed") == 0
    assert env.ended(900)["state"] == "finished", env.status()
    _, losses = _mlflow(env.cfg)
    assert sorted(losses) == list(range(1, 25)), f"lost or repeated steps: {sorted(losses)}"
    assert step_at_kill >= TRAIN["ckpt_every_steps"]
