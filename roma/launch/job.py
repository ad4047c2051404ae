"""What one job does, whatever the executor: status running -> execute(cfg) -> finished | failed.

`execute` is `roma.run.execute` unless a target "module:function" is named (tests inject fakes
this way; a target string, not a function object, so it also works in child processes and SLURM jobs).
"""
from __future__ import annotations

import importlib
import logging
import os
import signal
import traceback
from pathlib import Path
from typing import Any, Callable

from roma import atomic
from roma.config import RunConfig
from roma.launch.status import here, read_status, run_dir, write_status
from roma.tracking import tracking_uri

log = logging.getLogger(__name__)
DEFAULT_EXECUTE = "roma.run:execute"
_preempt_hooks: list[Callable[[], None]] = []


def resolve_execute(target: str | None) -> Callable[[RunConfig], dict]:
    module, _, func = (target or DEFAULT_EXECUTE).partition(":")
    if not func:
        raise ValueError(f"execute target {target!r} must look like 'package.module:function'")
    return getattr(importlib.import_module(module), func)


def on_preempt(hook: Callable[[], None]) -> None:
    """Register a hook run when SLURM preempts/times out the job, before it is requeued.

    It runs inside a signal handler in the main thread; it should only save state that is
    consistent at any point (e.g. a checkpoint of the last completed step).
    """
    _preempt_hooks.append(hook)


def worker_ignore_job_signals(worker_id: int = 0) -> None:
    """DataLoader `worker_init_fn` for jobs: leave SIGTERM/SIGUSR2 to the main process.

    SLURM signals every process of a job step on preemption (SIGTERM) and before the time limit
    (SIGUSR2). torch's workers die on SIGTERM and would run submitit's requeue handler on SIGUSR2;
    either way the main process then fails instead of checkpointing and requeueing.
    """
    for sig in (signal.SIGTERM, signal.SIGUSR2):
        signal.signal(sig, signal.SIG_IGN)


def sync_mlflow_state(cfg: RunConfig, state: str, reason: str | None = None) -> None:
    """Set the `state` tag of the run's MLflow run(s) so MLflow agrees with status.json.

    Best effort: the run may not exist yet (failed before tracking started) or the store may be
    locked; status.json stays the source of truth for the launcher.
    """
    uri = tracking_uri(cfg)
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).exists():
        return  # nothing was ever tracked; do not create a store just to tag nothing
    try:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=uri)
        exp = client.get_experiment_by_name(cfg.experiment)
        if exp is None:
            return
        for run in client.search_runs([exp.experiment_id], f"tags.run_id = '{cfg.run_id}'"):
            client.set_tag(run.info.run_id, "state", state)
            if reason:
                client.set_tag(run.info.run_id, "failure_reason", reason[:4000])
    except Exception as e:  # noqa: BLE001 - tagging must never turn a finished run into a failure
        log.warning("could not set MLflow state tag of %s: %s", cfg.run_id, e)


def prepare_run_dir(cfg: RunConfig) -> Path:
    from roma.spec import dump_config

    d = run_dir(cfg)
    d.mkdir(parents=True, exist_ok=True)
    atomic.write_text(d / "config.yaml", dump_config(cfg))
    return d


def run_one(cfg: RunConfig | dict, execute_target: str | None = None, executor: str = "local",
            job_id: str | None = None, rank: int = 0) -> dict[str, Any]:
    """Run one config to the end, recording its state. Re-raises the execute error after recording it."""
    from roma.spec import build_config

    cfg = cfg if isinstance(cfg, RunConfig) else build_config(cfg)
    if rank != 0:  # other DDP ranks only compute; rank 0 owns status and tracking
        return resolve_execute(execute_target)(cfg)
    d = prepare_run_dir(cfg)
    extra = {"job_id": job_id} if job_id else {}
    write_status(d, "running", executor=executor, **here(), **extra)
    sync_mlflow_state(cfg, "running")
    try:
        result = resolve_execute(execute_target)(cfg) or {}
    except KeyboardInterrupt:
        write_status(d, "cancelled", reason="interrupted (Ctrl-C)")
        sync_mlflow_state(cfg, "cancelled", "interrupted")
        raise
    except SystemExit as e:  # submitit's requeue exits this way after checkpoint() wrote pending
        if (read_status(d) or {}).get("state") == "running":
            write_status(d, "cancelled", reason=f"exited with {e.code!r}")
        raise
    except Exception as e:
        reason = f"{type(e).__name__}: {e}"
        (d / "error.txt").write_text(traceback.format_exc())
        write_status(d, "failed", reason=reason)
        sync_mlflow_state(cfg, "failed", reason)
        raise
    step = result.get("step", (read_status(d) or {}).get("step"))
    loss = result.get("final_loss", result.get("loss", (read_status(d) or {}).get("loss")))
    write_status(d, "finished", step=step, loss=loss)
    sync_mlflow_state(cfg, "finished")
    return result


def _distributed_env() -> tuple[str | None, int]:
    """torch.distributed env:// variables from submitit's job environment (multi-node DDP)."""
    import submitit

    env = submitit.JobEnvironment()
    if env.num_tasks > 1:
        os.environ.setdefault("MASTER_ADDR", env.hostnames[0])
        # SLURM_JOB_ID is unique per array task, so tasks sharing a node get distinct ports
        os.environ.setdefault("MASTER_PORT", str(20000 + int(env.raw_job_id) % 20000))
        os.environ["RANK"] = str(env.global_rank)
        os.environ["WORLD_SIZE"] = str(env.num_tasks)
        os.environ["LOCAL_RANK"] = str(env.local_rank)
        os.environ["LOCAL_WORLD_SIZE"] = str(env.num_tasks // max(env.num_nodes, 1))
    return str(env.job_id), env.global_rank


def _checkpointable_base():
    import submitit

    return submitit.helpers.Checkpointable


class SlurmRun(_checkpointable_base()):
    """The callable submitted to SLURM. On preemption/timeout submitit calls `checkpoint`, which
    requeues the same call: `execute` then resumes from last.pt into the same MLflow run."""

    def __init__(self, execute_target: str | None = None):
        self.execute_target = execute_target

    def __call__(self, cfg_dict: dict) -> dict:
        job_id, rank = _distributed_env()
        return run_one(cfg_dict, self.execute_target, executor="slurm", job_id=job_id, rank=rank)

    def checkpoint(self, cfg_dict: dict):
        from roma.spec import build_config

        for hook in list(_preempt_hooks):
            try:
                hook()
            except Exception as e:  # noqa: BLE001 - a failed hook must not block the requeue
                log.warning("preempt hook %s failed: %s", hook, e)
        write_status(run_dir(build_config(cfg_dict)), "pending", reason="requeued (preempted or timed out)")
        return super().checkpoint(cfg_dict)
