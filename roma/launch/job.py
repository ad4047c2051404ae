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
import os
import traceback
from pathlib import Path
from typing import Any, Callable

from roma import atomic
from roma.config import RunConfig
from roma.launch.claim import claim
from roma.launch import status as run_state
from roma.launch.status import read_status, update_progress
from roma.progress import Rate
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
    """The training loop's progress -> status.json (step of total, rate, time left, the losses, for
    `launch.py status`); its checkpoint-on-preemption -> SLURM's signal."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.rate = Rate()

    def on_start(self, step: int, facts: dict[str, Any]) -> None:
        self.rate = Rate(total=facts.get("total_steps"), start=step)

    def on_log(self, step: int, metrics: dict[str, float]) -> None:
        facts: dict[str, Any] = {"images_per_s": metrics.get("images_per_s")}
        if self.rate.total:
            facts.update(total_steps=int(self.rate.total), s_per_step=self.rate.seconds_per_unit(step),
                         eta_s=self.rate.left(step))
        if "val_loss" in metrics:
            facts["val_loss"] = float(metrics["val_loss"])
        update_progress(self.run_dir, step, metrics.get("loss"), **facts)

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
            job_id: str | None = None, rank: int = 0, evaluate: bool = True) -> dict[str, Any]:
    """Run one config to the end, recording its state. Re-raises the execute error after recording it.

    evaluate=False: pretraining only (its evaluations are separate jobs, see eval_one).
    Raises roma.launch.claim.RunClaimed, recording nothing, when another process computes the run."""
    cfg = cfg if isinstance(cfg, RunConfig) else build_config(cfg)
    execute = resolve_execute(execute_target)
    kw = {} if evaluate else {"evaluate": False}
    if rank != 0:  # other DDP ranks only compute; rank 0 owns status and tracking
        return execute(cfg, **kw)
    d = prepare_run_dir(cfg)
    with claim(d):
        run_state.started(d, executor, job_id)
        try:
            result = execute(cfg, JobHooks(d), **kw) or {}
        except KeyboardInterrupt:
            run_state.cancelled(d, "interrupted (Ctrl-C)")
            raise
        except SystemExit as e:  # submitit's requeue exits this way after checkpoint() wrote requeued
            st = read_status(d) or {}
            if st.get("state") == "requeued":  # execute ended the MLflow run KILLED; it waits in the queue
                run_state.mirror(cfg)
            elif st.get("state") == "running":
                run_state.cancelled(d, f"exited with {e.code!r}")
            raise
        except Exception as e:
            from roma.run import EvaluationError

            atomic.write_text(d / "error.txt", traceback.format_exc())
            run_state.failed(d, f"{type(e).__name__}: {e}", encoder=d / "encoder.pt" if isinstance(e, EvaluationError) else None)
            raise
        step = result.get("step", (read_status(d) or {}).get("step"))
        loss = result.get("final_loss", result.get("loss", (read_status(d) or {}).get("loss")))
        run_state.finished(d, step, loss)
        return result


def eval_one(cfg: RunConfig | dict, only: list[str] | None = None, force: bool = False) -> dict[str, Any]:
    """Run evaluations of a finished run alone (roma.run.evaluate), each under its own claim
    (eval/<name>/claim.lock: two launches never compute one evaluation), then bring status.json in
    line: failed (stage eval) while any evaluation's last attempt failed, else finished again.

    Raises roma.run.EvaluationError when one failed (the others still ran); FileNotFoundError when
    the pretraining has not finished. An evaluation another process holds is skipped."""
    from roma.launch.claim import RunClaimed
    from roma.run import EvaluationError, evaluate, failed_evaluations, select_evaluations

    cfg = cfg if isinstance(cfg, RunConfig) else build_config(cfg)
    d = cfg.run_dir
    names = select_evaluations(cfg, only)
    result: dict[str, Any] = {"evaluations": [], "skipped": []}
    failures: dict[str, str] = {}
    for name in names:
        edir = d / "eval" / name
        edir.mkdir(parents=True, exist_ok=True)
        try:
            with claim(edir):
                got = evaluate(cfg, [name], force)
        except RunClaimed as e:
            log.warning("%s: %s", name, e)
            result["skipped"].append(name)
            continue
        except EvaluationError as e:
            failures.update(e.failures)
            continue
        result["evaluations"].append(name)
        result.update({k: v for k, v in got.items() if k != "evaluations"})
    still = failed_evaluations(cfg)
    run_state.evaluations_settled(d, str(EvaluationError(still)) if still else None)
    if failures:
        raise EvaluationError(failures)
    return result


def _checkpointable_base():
    import submitit

    return submitit.helpers.Checkpointable


class SlurmRun(_checkpointable_base()):
    """The callable submitted to SLURM. On preemption/timeout submitit calls `checkpoint`, which
    requeues the same call: `execute` then resumes from last.pt into the same MLflow run."""

    def __init__(self, execute_target: str | None = None, evaluate: bool = True):
        self.execute_target, self.evaluate = execute_target, evaluate

    def __call__(self, cfg_dict: dict) -> dict:
        job_id, rank = export_submitit_env()
        return run_one(cfg_dict, self.execute_target, executor="slurm", job_id=job_id, rank=rank,
                       evaluate=self.evaluate)

    def checkpoint(self, cfg_dict: dict):
        for hook in list(_preempt_hooks):
            try:
                hook()
            except Exception as e:  # noqa: BLE001 - a failed hook must not block the requeue
                log.warning("preempt hook %s failed: %s", hook, e)
        d = build_config(cfg_dict).run_dir
        job_id = (read_status(d) or {}).get("job_id") or _slurm_job_id()
        run_state.requeued(d, job_id)
        return super().checkpoint(cfg_dict)


def _slurm_job_id() -> str | None:
    if os.environ.get("SLURM_ARRAY_JOB_ID"):
        return f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ.get('SLURM_ARRAY_TASK_ID', '')}"
    return os.environ.get("SLURM_JOB_ID")


class SlurmEval(_checkpointable_base()):
    """One evaluation of a run as its own SLURM job (submitted with afterok on the pretraining job).
    Requeued on preemption/timeout: a dense evaluation resumes from its own last.pt."""

    def __call__(self, cfg_dict: dict, only: list[str], force: bool = False) -> dict:
        return eval_one(cfg_dict, only, force)
