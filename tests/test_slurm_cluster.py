"""The one-node SLURM cluster of slurm/local, driven through submitit as the launcher drives it.

Run: sudo-capable root shell, `python -m pytest tests/test_slurm_cluster.py` (starts the cluster if
needed, about 12 s; a fresh machine first installs packages, about a minute). The cluster tests are
marked `slurm` and skip with the reason when no cluster can be had; the profile checks run anywhere.
"""
from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from conftest_slurm import LOCAL, REPO, slurm_cluster, submitit_folder, wait_for  # noqa: F401  (fixtures)

submitit = pytest.importorskip("submitit")

PROFILES = REPO / "slurm" / "profiles"
TESTS = Path(__file__).resolve().parent


# ---------------------------------------------------------------- jobs (run inside SLURM)

def add(a: int, b: int) -> int:
    return a + b


def sleep_then(seconds: float, value: str) -> str:
    time.sleep(seconds)
    return value


def stamp(folder: str, index: int, seconds: float) -> int:
    """An array task: record when it ran, so the test can check the concurrency cap."""
    start = time.time()
    time.sleep(seconds)
    Path(folder, f"task{index}.txt").write_text(f"{start} {time.time()}\n")
    return index


class CountingTrainer(submitit.helpers.Checkpointable):
    """A toy training loop: one step per 0.5 s, its step in its own checkpoint file after each step.

    Every attempt appends the step it starts from to attempts.txt; the default checkpoint()
    resubmits the same call, so a requeued attempt resumes from the file.
    """

    def __call__(self, folder: str, n_steps: int) -> list[int]:
        ckpt, attempts = Path(folder, "ckpt.txt"), Path(folder, "attempts.txt")
        step = int(ckpt.read_text()) if ckpt.exists() else 0
        with attempts.open("a") as fh:
            fh.write(f"{step}\n")
        while step < n_steps:
            time.sleep(0.5)
            step += 1
            tmp = ckpt.with_suffix(".tmp")
            tmp.write_text(str(step))
            os.replace(tmp, ckpt)  # atomic: an interrupt never leaves half a checkpoint
        return [int(x) for x in attempts.read_text().split()]


# ---------------------------------------------------------------- helpers

@pytest.fixture
def jobs_importable(monkeypatch):
    """Jobs unpickle the functions above by module name: put tests/ on the job's PYTHONPATH
    (sbatch exports the submitting environment)."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(TESTS), os.environ.get("PYTHONPATH")) if p))


def executor(folder: Path, partition: str, **params) -> "submitit.SlurmExecutor":
    ex = submitit.SlurmExecutor(folder=str(folder), max_num_timeout=3)
    ex.update_parameters(partition=partition, ntasks_per_node=1, cpus_per_task=1, mem="1GB",
                         time=60, signal_delay_s=30, **params)
    return ex


def sacct_states(job_id: str) -> list[str]:
    """Every attempt's state, oldest first (-D keeps requeued attempts), e.g. ["REQUEUED", "COMPLETED"]."""
    out = subprocess.run(["sacct", "-D", "-X", "-n", "-P", "-j", job_id, "-o", "State"],
                         capture_output=True, text=True, timeout=30, check=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def forced_state(job) -> str:
    return job.get_info(mode="force").get("State", "UNKNOWN")


# ---------------------------------------------------------------- profiles (no cluster needed)

@pytest.mark.parametrize("path", sorted(PROFILES.glob("*.yaml")), ids=lambda p: p.stem)
def test_profile_loads_and_leaves_time_to_checkpoint(path):
    from roma.launch.profiles import load_profile

    profile = load_profile(str(path))
    res = profile["resources"]
    assert res.get("partition"), f"{path.name}: no partition"
    assert res["time_min"] * 60 > res["signal_delay_s"] + 60, \
        f"{path.name}: time_min leaves no room for signal_delay_s (+60 s: SLURM checks limits every 30 s)"
    assert isinstance(res.get("setup", ()), tuple)


def test_local_profile_fits_the_test_node():
    """local.yaml asks for what the one-node cluster has: no GPUs, a CPU and memory of a small node."""
    raw = yaml.safe_load((PROFILES / "local.yaml").read_text())
    template = (LOCAL / "slurm.conf.in").read_text()
    assert raw["gpus_per_node"] == 0 and "Gres" not in template
    # start.sh renders the node and partition lines (@NODE_LINES@); its default partition is the profile's
    assert "@NODE_LINES@" in template and "PartitionName=" in (LOCAL / "start.sh").read_text()
    assert "PARTITION=${ROMA_SLURM_PARTITION:-debug}" in (LOCAL / "common.sh").read_text() and raw["partition"] == "debug"
    assert raw["cpus_per_task"] <= 2 and raw["mem_gb"] <= 2
    assert raw["time_min"] > 10  # submitit: interrupts before 80% of a >10 min limit are preemptions


# ---------------------------------------------------------------- the cluster

@pytest.mark.slurm
def test_start_is_idempotent_and_quick_when_up(slurm_cluster):
    if os.geteuid() != 0:
        pytest.skip("start.sh needs root")
    t0 = time.time()
    proc = subprocess.run(["bash", str(LOCAL / "start.sh")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "starting" not in proc.stderr, f"a healthy cluster was restarted:\n{proc.stderr}"
    assert time.time() - t0 < 20
    assert subprocess.run(["bash", str(LOCAL / "status.sh"), "-q"], timeout=60).returncode == 0


@pytest.mark.slurm
def test_job_runs_with_local_profile_and_result_is_read(slurm_cluster, submitit_folder, jobs_importable):
    from roma.config import ResourcesConfig
    from roma.launch.profiles import load_profile
    from roma.launch.slurm import slurm_parameters

    profile = load_profile("local")
    params = slurm_parameters(ResourcesConfig(**profile["resources"]), "roma-test", profile["parallelism"])
    params["partition"] = slurm_cluster.partition
    ex = submitit.SlurmExecutor(folder=str(submitit_folder))
    ex.update_parameters(**params)
    t0 = time.time()
    job = ex.submit(add, 2, 3)
    assert job.result() == 5
    turnaround = time.time() - t0
    wait_for(lambda: sacct_states(job.job_id) == ["COMPLETED"], 30, "sacct to record COMPLETED")
    assert forced_state(job) == "COMPLETED"
    print(f"first-job turnaround {turnaround:.1f} s")


@pytest.mark.slurm
@pytest.mark.parametrize("timeout", [False, True], ids=["preempted", "timed_out"])
def test_interrupted_job_is_requeued_and_resumes_from_its_checkpoint(slurm_cluster, submitit_folder,
                                                                     jobs_importable, tmp_path, timeout):
    work = tmp_path / "work"
    work.mkdir()
    n_steps = 12
    job = executor(submitit_folder, slurm_cluster.partition).submit(CountingTrainer(), str(work), n_steps)
    ckpt = work / "ckpt.txt"
    wait_for(lambda: ckpt.exists() and int(ckpt.read_text() or 0) >= 3, 90, "3 training steps")
    # preemption: SIGTERM, then USR2; time limit: USR2 only. USR2 -> checkpoint() -> scontrol requeue
    job._interrupt(timeout=timeout)
    attempts = job.result()  # requeued attempts start after cred_expire (10 s)
    assert len(attempts) == 2, f"expected one requeue, attempts started at steps {attempts}"
    assert attempts[0] == 0 and 3 <= attempts[1] < n_steps, f"resumed from step {attempts[1]}"
    assert int(ckpt.read_text()) == n_steps
    states = wait_for(lambda: (s := sacct_states(job.job_id))[-1:] == ["COMPLETED"] and s, 30, "COMPLETED")
    assert states == ["REQUEUED", "COMPLETED"], states


@pytest.mark.slurm
def test_cancelled_job_shows_cancelled(slurm_cluster, submitit_folder, jobs_importable):
    job = executor(submitit_folder, slurm_cluster.partition).submit(sleep_then, 300, "never")
    wait_for(lambda: forced_state(job) == "RUNNING", 60, "the job to run")
    job.cancel()
    wait_for(lambda: job.done(force_check=True), 30, "submitit to see the job done")
    assert forced_state(job).startswith("CANCELLED")  # sacct says "CANCELLED by <uid>"
    assert sacct_states(job.job_id) == ["CANCELLED"]


@pytest.mark.slurm
def test_job_array_respects_its_concurrency_cap(slurm_cluster, submitit_folder, jobs_importable, tmp_path):
    if slurm_cluster.cpus < 2:
        pytest.skip("needs a node with 2 CPUs, or an ignored cap could not show")
    out = tmp_path / "stamps"
    out.mkdir()
    n = 3
    ex = executor(submitit_folder, slurm_cluster.partition, array_parallelism=1)
    jobs = ex.map_array(stamp, [str(out)] * n, range(n), [1.5] * n)
    assert sorted(j.result() for j in jobs) == list(range(n))
    spans = sorted(tuple(map(float, (out / f"task{i}.txt").read_text().split())) for i in range(n))
    for (_, end), (start, _) in zip(spans, spans[1:]):
        assert start >= end, f"array tasks overlapped although capped at 1: {spans}"
    array_id = jobs[0].job_id.split("_")[0]
    assert f"--array=0-{n - 1}%1" in (submitit_folder / f"{array_id}_submission.sh").read_text()
    # the result file can appear just before SLURM records the task's end
    wait_for(lambda: all(forced_state(j) == "COMPLETED" for j in jobs), 30, "every task COMPLETED")
