"""What a launch does with each run, given its status file: run, resume, retry, rerun or skip.

    no status                 -> run
    finished                  -> skip            (--force: rerun from scratch)
    failed                    -> skip            (--retry-failed: retry, resuming from last.pt)
    claimed, or pending/running/requeued and alive -> skip (active)   (a process holds the run's claim,
                                                       a live local process or a queued SLURM job)
    pending/running/requeued/cancelled/interrupted -> resume (execute continues from last.pt)

A new run whose config equals a run already in the study folder except for the data's checksum
(other images under the same data root) gets a `note` saying so: it is a new run, the old one is kept.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from roma.config import RunConfig
from roma.launch import slurm
from roma.launch.claim import holder
from roma.launch import status as run_state
from roma.launch.status import WAITING, local_process_alive, read_status, run_dir
from roma.validation import ConfigError, is_safe_name, load_config

LAUNCHING = ("run", "resume", "retry", "rerun")


@dataclass
class Planned:
    cfg: RunConfig
    state: str  # new | one of status.STATES
    action: str  # run | resume | retry | rerun | skip
    why: str = ""
    status: dict[str, Any] | None = None
    note: str = ""  # a new run that another run's data would have matched (see data_changed)

    @property
    def launches(self) -> bool:
        return self.action in LAUNCHING


def reconcile(cfg: RunConfig, status: dict[str, Any] | None) -> dict[str, Any] | None:
    """Correct a pending/running status whose SLURM job has ended without recording it
    (scancel, node failure, OOM kill); keeps MLflow's `state` tag in agreement."""
    if not status or status.get("state") not in WAITING or status.get("executor") != "slurm":
        return status
    job = slurm.job_state(str(status.get("job_id", "")))
    if job in (None, "active", "completed"):
        return status
    own = job == "cancelled" and status.get("state") != "requeued"  # a requeued one's reason is about the requeue
    reason = status.get("reason") if own else f"SLURM job {status.get('job_id')} ended: {job}"
    reason = reason or f"SLURM job {status.get('job_id')} cancelled"
    return run_state.ended_outside(cfg, job, reason)


def is_active(cfg: RunConfig, status: dict[str, Any] | None) -> bool:
    """A process computes the run now (it holds the claim), or a queued/live job will."""
    if holder(run_dir(cfg)) is not None:
        return True
    if not status or status.get("state") not in WAITING:
        return False
    if status.get("executor") == "slurm":
        return slurm.job_state(str(status.get("job_id", ""))) == "active"
    return local_process_alive(status)


def _without_checksum(cfg: RunConfig) -> dict[str, Any]:
    ident = cfg.identity()
    return {**ident, "data": {k: v for k, v in ident["data"].items() if k != "checksum"}}


def _study_runs(study: Path) -> list[RunConfig]:
    """The configs of the run folders under `study` (<output_root>/<experiment>)."""
    out = []
    for f in sorted(study.glob("*/config.yaml")):
        try:
            out.append(load_config(f.read_text()))
        except (OSError, ValueError, yaml.YAMLError):
            continue  # a foreign or broken folder: not a run this note can be about
    return out


def data_changed(cfg: RunConfig, others: list[RunConfig]) -> str:
    """A line for a new run whose config only differs from another run's in data.checksum."""
    mine = _without_checksum(cfg)
    for other in others:
        if other.data.checksum and other.data.checksum != cfg.data.checksum and _without_checksum(other) == mine:
            same_root = " under the same path" if other.data.root == cfg.data.root else ""
            return (f"the data at {cfg.data.root} differs from run {other.run_id}'s{same_root} (manifest sha256 "
                    f"{other.data.checksum[:12]}.. -> {cfg.data.checksum[:12]}..): new run {cfg.run_id}, "
                    f"{other.run_id} is kept")
    return ""


def store_problems(runs: list[RunConfig]) -> list[str]:
    """One line per MLflow store of `runs` that cannot be used (each store looked at once, with a
    short timeout: roma.tracking.store_problem), naming its URI, the cause and how many runs use it."""
    from roma.tracking import store_problem, tracking_uri

    by_uri: dict[str, int] = {}
    for cfg in runs:
        by_uri[tracking_uri(cfg)] = by_uri.get(tracking_uri(cfg), 0) + 1
    return [f"{problem} ({n} run(s) track there)" for uri, n in by_uri.items() if (problem := store_problem(uri))]


def plan(runs: list[RunConfig], force: bool = False, retry_failed: bool = False) -> list[Planned]:
    """What to do with each run; ConfigError, before anything is planned, when a run's MLflow store
    is down or corrupt (found here once, not inside every job after minutes of retries)."""
    problems = store_problems(runs)
    if problems:
        raise ConfigError([*problems, "fix the tracking store (or set tracking_uri) and launch again"])
    out = []
    studies: dict[Path, list[RunConfig]] = {}
    for cfg in runs:
        status = reconcile(cfg, read_status(run_dir(cfg)))
        state = status["state"] if status else "new"
        if is_active(cfg, status):
            out.append(Planned(cfg, state, "skip", "active", status))
        elif force and status:
            out.append(Planned(cfg, state, "rerun", "--force", status))
        elif state == "new":
            study = Path(cfg.output_root) / cfg.experiment
            others = studies.setdefault(study, _study_runs(study))
            out.append(Planned(cfg, state, "run", "", status, data_changed(cfg, others)))
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
