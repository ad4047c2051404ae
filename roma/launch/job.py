"""What one job does, whatever the executor: claim the run, status running -> execute(cfg) ->
finished | failed | cancelled.

`execute` is `roma.run.execute`; tests name a fake as "module:function" (a target string, not a
function object, so it also works in child processes and SLURM jobs). The job owns the run
folder's config.yaml (written once, by prepare_run_dir), status.json, the run's claim and the
SLURM preemption hooks; roma.run.execute owns the MLflow run.
"""
from __future__ import annotations

import contextlib
import importlib
import logging
import traceback
from pathlib import Path
from typing import Any, Callable

from roma import atomic
from roma.config import RunConfig
from roma.launch.claim import claim
from roma.launch.status import here, read_status, update_progress, write_status
from roma.train.distributed import export_submitit_env
from roma.train.hooks import TrainHooks
from roma.validation import build_config, dump_config

log = logging.getLogger(__name__)
_preempt_hooks: list[Callable[[], None]] = []


def resolve_execute(target: str | None) -> Callable[..., dict]:
    """roma.run.execute, or the "module:function" a test names."""
    if target is None:
        from roma.run import execute

        return execute
    module, _, func = target.partition(":")
    if not func:
        raise ValueError(f"execute target {target!r} must look like 'package.module:function'")
    return getattr(importlib.import_module(module), func)


class JobHooks(TrainHooks):
    """The training loop's progress -> status.json; its checkpoint-on-preemption -> SLURM's signal."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)

    def on_log(self, step: int, metrics: dict[str, float]) -> None:
        update_progress(self.run_dir, step, metrics.get("loss"))

    def on_preempt(self, save: Callable[[], None]) -> Callable[[], None]:
        """`save` runs inside SLURM's signal handler (main thread) before the job is requeued: it
        must only save state that is consistent at any point (the last completed step)."""
        _preempt_hooks.append(save)

        def undo() -> None:
            with contextlib.suppress(ValueError):
                _preempt_hooks.remove(save)
        return undo


def prepare_run_dir(cfg: RunConfig) -> Path:
    """The run folder with its config.yaml: written once, when the run is first launched."""
    d = cfg.run_dir
    d.mkdir(parents=True, exist_ok=True)
    if not (d / "config.yaml").exists():
        atomic.write_text(d / "config.yaml", dump_config(cfg))
    return d


def run_one(cfg: RunConfig | dict, execute_target: str | None = None, executor: str = "local",
            job_id: str | None = None, rank: int = 0) -> dict[str, Any]:
    """Run one config to the end, recording its state. Re-raises the execute error after recording it.

    Raises roma.launch.claim.RunClaimed, recording nothing, when another process computes the run."""
    cfg = cfg if isinstance(cfg, RunConfig) else build_config(cfg)
    execute = resolve_execute(execute_target)
    if rank != 0:  # other DDP ranks only compute; rank 0 owns status and tracking
        return execute(cfg)
    d = prepare_run_dir(cfg)
    with claim(d):
        extra = {"job_id": job_id} if job_id else {}
        write_status(d, "running", executor=executor, **here(), **extra)
        try:
            result = execute(cfg, JobHooks(d)) or {}
        except KeyboardInterrupt:
            write_status(d, "cancelled", reason="interrupted (Ctrl-C)")
            raise
        except SystemExit as e:  # submitit's requeue exits this way after checkpoint() wrote pending
            if (read_status(d) or {}).get("state") == "running":
                write_status(d, "cancelled", reason=f"exited with {e.code!r}")
            raise
        except Exception as e:
            from roma.run import EvaluationError

            atomic.write_text(d / "error.txt", traceback.format_exc())
            stage = {"stage": "eval", "encoder": str(d / "encoder.pt")} if isinstance(e, EvaluationError) else {}
            write_status(d, "failed", reason=f"{type(e).__name__}: {e}", **stage)
            raise
        step = result.get("step", (read_status(d) or {}).get("step"))
        loss = result.get("final_loss", result.get("loss", (read_status(d) or {}).get("loss")))
        write_status(d, "finished", step=step, loss=loss, stage=None, encoder=None)
        return result


def _checkpointable_base():
    import submitit

    return submitit.helpers.Checkpointable


class SlurmRun(_checkpointable_base()):
    """The callable submitted to SLURM. On preemption/timeout submitit calls `checkpoint`, which
    requeues the same call: `execute` then resumes from last.pt into the same MLflow run."""

    def __init__(self, execute_target: str | None = None):
        self.execute_target = execute_target

    def __call__(self, cfg_dict: dict) -> dict:
        job_id, rank = export_submitit_env()
        return run_one(cfg_dict, self.execute_target, executor="slurm", job_id=job_id, rank=rank)

    def checkpoint(self, cfg_dict: dict):
        for hook in list(_preempt_hooks):
            try:
                hook()
            except Exception as e:  # noqa: BLE001 - a failed hook must not block the requeue
                log.warning("preempt hook %s failed: %s", hook, e)
        write_status(build_config(cfg_dict).run_dir, "pending", reason="requeued (preempted or timed out)")
        return super().checkpoint(cfg_dict)
