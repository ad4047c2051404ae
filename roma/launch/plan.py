"""What a launch does with each run, given its status file: run, resume, retry, rerun or skip.

    no status                 -> run
    finished                  -> skip            (--force: rerun from scratch)
    failed                    -> skip            (--retry-failed: retry, resuming from last.pt)
    claimed, or pending/running and alive -> skip (active)   (a process holds the run's claim, a live
                                                       local process or a queued SLURM job)
    pending/running/cancelled -> resume          (execute continues from last.pt)
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from roma.config import RunConfig
from roma.launch import slurm
from roma.launch.claim import holder
from roma.launch.status import local_process_alive, read_status, run_dir, write_status
from roma.tracking import mark_state
from roma.validation import is_safe_name

LAUNCHING = ("run", "resume", "retry", "rerun")


@dataclass
class Planned:
    cfg: RunConfig
    state: str  # new | one of status.STATES
    action: str  # run | resume | retry | rerun | skip
    why: str = ""
    status: dict[str, Any] | None = None

    @property
    def launches(self) -> bool:
        return self.action in LAUNCHING


def reconcile(cfg: RunConfig, status: dict[str, Any] | None) -> dict[str, Any] | None:
    """Correct a pending/running status whose SLURM job has ended without recording it
    (scancel, node failure, OOM kill); keeps MLflow's `state` tag in agreement."""
    if not status or status.get("state") not in ("pending", "running") or status.get("executor") != "slurm":
        return status
    job = slurm.job_state(str(status.get("job_id", "")))
    if job in (None, "active", "completed"):
        return status
    reason = status.get("reason") if job == "cancelled" else f"SLURM job {status.get('job_id')} ended: {job}"
    reason = reason or f"SLURM job {status.get('job_id')} cancelled"
    new = write_status(run_dir(cfg), job, reason=reason)
    mark_state(cfg, job, reason)
    return new


def is_active(cfg: RunConfig, status: dict[str, Any] | None) -> bool:
    """A process computes the run now (it holds the claim), or a queued/live job will."""
    if holder(run_dir(cfg)) is not None:
        return True
    if not status or status.get("state") not in ("pending", "running"):
        return False
    if status.get("executor") == "slurm":
        return slurm.job_state(str(status.get("job_id", ""))) == "active"
    return local_process_alive(status)


def plan(runs: list[RunConfig], force: bool = False, retry_failed: bool = False) -> list[Planned]:
    out = []
    for cfg in runs:
        status = reconcile(cfg, read_status(run_dir(cfg)))
        state = status["state"] if status else "new"
        if is_active(cfg, status):
            out.append(Planned(cfg, state, "skip", "active", status))
        elif force and status:
            out.append(Planned(cfg, state, "rerun", "--force", status))
        elif state == "new":
            out.append(Planned(cfg, state, "run", "", status))
        elif state == "finished":
            out.append(Planned(cfg, state, "skip", "finished", status))
        elif state == "failed":
            out.append(Planned(cfg, state, "retry" if retry_failed else "skip",
                               "--retry-failed" if retry_failed else "failed (use --retry-failed)", status))
        else:
            out.append(Planned(cfg, state, "resume", state, status))
    return out


def clear_for_rerun(cfg: RunConfig) -> None:
    """--force: delete the run folder so the run starts again from step 0 (a new MLflow run)."""
    d = run_dir(cfg)
    root = Path(cfg.output_root).resolve()
    if not is_safe_name(cfg.experiment) or d.resolve().parent.parent != root:  # validation refuses these too
        raise ValueError(f"refusing to delete {d}: not a run folder under {root}")
    if d.exists():
        shutil.rmtree(d)
