"""SLURM through submitit: one job array per spec (per distinct resources), and job states.

Resources, lowest priority first: ResourcesConfig defaults < the cluster profile < the spec's
`resources:` (and --set resources.*). Each array task runs `SlurmRun(cfg)`, which requeues itself
on preemption/timeout (see roma.launch.job).
"""
from __future__ import annotations

import dataclasses
import shutil
import subprocess
from pathlib import Path
from typing import Any

from roma.config import ResourcesConfig, RunConfig
from roma.launch import status as run_state

MAX_TIMEOUT_REQUEUES = 20  # time-limit requeues per run (preemptions do not count in submitit)
# sacct states that end a job -> our state
_SACCT_END = {"CANCELLED": "cancelled", "FAILED": "failed", "TIMEOUT": "failed", "OUT_OF_MEMORY": "failed",
              "NODE_FAIL": "failed", "BOOT_FAIL": "failed", "DEADLINE": "failed", "COMPLETED": "completed"}


def available() -> bool:
    return shutil.which("sbatch") is not None


def resolve_resources(cfg: RunConfig, profile: dict[str, Any] | None, spec_set: dict[str, Any]) -> ResourcesConfig:
    """The run's resources: defaults < profile < keys the spec (or --set) set explicitly."""
    from roma.validation import build_config

    merged = {**((profile or {}).get("resources") or {}), **spec_set}
    where = (lambda key: f"cluster profile {profile['path']}" if profile else "resources")
    return build_config({"resources": merged}, where).resources


def slurm_parameters(res: ResourcesConfig, job_name: str, parallelism: int = 0,
                     additional: dict[str, Any] | None = None) -> dict[str, Any]:
    """submitit.SlurmExecutor.update_parameters arguments for one array."""
    tasks = max(res.gpus_per_node, 1)  # one task per GPU (DDP), or one CPU task
    params: dict[str, Any] = {
        "job_name": job_name, "nodes": res.nodes, "ntasks_per_node": tasks,
        "cpus_per_task": res.cpus_per_task, "mem": f"{res.mem_gb}GB", "time": res.time_min,
        "signal_delay_s": res.signal_delay_s, "setup": list(res.setup),
    }
    if res.gpus_per_node > 0:
        params["gpus_per_node"] = res.gpus_per_node
    if res.nodes * tasks > 1:
        # A rank that dies (OOM kill, segfault, lost node) must end the whole step: without this,
        # srun waits for the others, which block in their next collective until the time limit.
        params["srun_args"] = ["--kill-on-bad-exit=1"]
    for key in ("partition", "account", "qos", "constraint"):
        if getattr(res, key):
            params[key] = getattr(res, key)
    if parallelism > 0:
        params["array_parallelism"] = parallelism
    if additional:
        params["additional_parameters"] = dict(additional)
    return params


def evaluation_parameters(res: ResourcesConfig, job_name: str, after_job: str | None = None,
                          additional: dict[str, Any] | None = None) -> dict[str, Any]:
    """submitit parameters of one evaluation job: one node, at most one GPU, the run's other
    resources; with after_job, it starts only once that (pretraining) job has succeeded
    (afterok), and SLURM cancels it if that job fails (kill-on-invalid-dep)."""
    one = dataclasses.replace(res, nodes=1, gpus_per_node=min(res.gpus_per_node, 1))
    params = slurm_parameters(one, job_name, 0, additional)
    if after_job:
        params["additional_parameters"] = {**params.get("additional_parameters", {}),
                                           "dependency": f"afterok:{after_job}", "kill_on_invalid_dep": "yes"}
    return params


def submit_evaluations(jobs: list[tuple[RunConfig, str | None]], spec_name: str, folder: Path,
                       additional: dict[str, Any] | None = None, only: list[str] | None = None,
                       force: bool = False) -> list[tuple[RunConfig, str, str]]:
    """One SLURM job per (run, evaluation not yet done): [(cfg, evaluation, job_id)]. jobs pairs
    each run with its pretraining job id (None: pretraining already finished, no dependency)."""
    import submitit

    from roma.launch.job import SlurmEval
    from roma.run import evaluation_done, select_evaluations

    out = []
    for cfg, after in jobs:
        for name in select_evaluations(cfg, only):
            if evaluation_done(cfg, name) and not force:
                continue
            executor = submitit.SlurmExecutor(folder=str(folder), max_num_timeout=MAX_TIMEOUT_REQUEUES)
            executor.update_parameters(**evaluation_parameters(cfg.resources, f"roma-{spec_name}-eval", after,
                                                               additional))
            job = executor.submit(SlurmEval(), cfg.to_dict(), [name], force)
            out.append((cfg, name, str(job.job_id)))
    return out


def submit(runs: list[RunConfig], spec_name: str, folder: Path, parallelism: int = 0,
           additional: dict[str, Any] | None = None, execute_target: str | None = None,
           evaluate: bool = True) -> list[tuple[RunConfig, str]]:
    """Submit the runs (resources already resolved into each cfg) -> [(cfg, job_id)].

    evaluate=False: the jobs only pretrain (submit_evaluations then adds one job per evaluation)."""
    import submitit

    from roma.launch.job import SlurmRun, prepare_run_dir

    groups: dict[ResourcesConfig, list[RunConfig]] = {}
    for cfg in runs:
        groups.setdefault(cfg.resources, []).append(cfg)
    out = []
    for res, group in groups.items():
        executor = submitit.SlurmExecutor(folder=str(folder), max_num_timeout=MAX_TIMEOUT_REQUEUES)
        executor.update_parameters(**slurm_parameters(res, f"roma-{spec_name}", parallelism, additional))
        for cfg in group:
            prepare_run_dir(cfg)
        jobs = executor.map_array(SlurmRun(execute_target, evaluate), [cfg.to_dict() for cfg in group])
        for cfg, job in zip(group, jobs):
            run_state.submitted(cfg, "slurm", job_id=str(job.job_id), submitit_folder=str(folder))
            out.append((cfg, str(job.job_id)))
    return out


def _query(args: list[str]) -> str | None:
    if shutil.which(args[0]) is None:
        return None
    try:
        res = subprocess.run(args, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return res.stdout if res.returncode == 0 else ""


def job_state(job_id: str) -> str | None:
    """"active" (queued/running/requeued), an ended state (cancelled/failed/completed, from
    sacct), or None when SLURM cannot tell (no client tools, unknown job)."""
    out = _query(["squeue", "-h", "-j", job_id, "-o", "%T"])
    if out and out.strip():
        return "active"
    out = _query(["sacct", "-n", "-X", "-P", "-j", job_id, "-o", "State"])
    if not out:
        return None
    first = out.strip().splitlines()[-1].split()[0] if out.strip() else ""
    if first in ("PENDING", "RUNNING", "REQUEUED", "RESIZING", "SUSPENDED", "PREEMPTED", "COMPLETING"):
        return "active"
    return _SACCT_END.get(first)
