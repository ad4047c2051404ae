"""`<output_root>/<experiment>/<run_id>/status.json`: the state of one run, and its only writer.

    {"state": "pending|running|requeued|finished|failed|cancelled|interrupted", "step": int|None, "loss": float|None,
     "reason": str|None, "updated": ISO-8601 UTC, ...executor facts: "executor", "job_id", "host", "pid"}

Every change of a run's state is one of the transitions below, called by the launcher (submitted,
reconciled), the executors (a child that died: ended_outside) and the job (roma.launch.job:
started, progressed, finished, failed, cancelled, requeued, evaluations_settled). Nothing else
writes status.json (tests/test_run_state.py checks). The MLflow run follows: while a job runs,
roma.run.execute owns its MLflow run and ends it FINISHED / FAILED / KILLED itself; a state set
from outside a live job (a killed child, a SLURM job that ended unrecorded, a requeue) is mirrored
to MLflow here (roma.tracking.mark_state).

A SLURM job interrupted by preemption or its time limit is `requeued` (reason names the job id)
while it waits in the queue, and running again once it restarts. A run whose evaluation failed
after pretraining finished is failed with "stage": "eval" and "encoder": its usable encoder.pt;
--retry-failed reruns only the evaluations.
"""
from __future__ import annotations

import os
import signal
import socket
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from roma import atomic
from roma.config import RunConfig

STATES = ("pending", "running", "requeued", "finished", "failed", "cancelled", "interrupted")
WAITING = ("pending", "running", "requeued")  # states a live process or a queued job will move on
ENDED = ("finished", "failed", "cancelled", "interrupted")  # no process will move these on
# a process killed by one of these was stopped from outside (kill, the OOM killer, a launcher going
# away): `interrupted`, which a plain relaunch resumes; any other signal is a crash (`failed`)
STOP_SIGNALS = (signal.SIGTERM, signal.SIGKILL, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT)


def run_dir(cfg: RunConfig) -> Path:
    return cfg.run_dir


SCALAR = (str, int, float, type(None))  # a number may come back as a string (json default=str)
FIELD_TYPES = {"step": SCALAR, "loss": SCALAR, "reason": (str, type(None)), "updated": (str, type(None)),
               "job_id": SCALAR, "host": SCALAR, "pid": SCALAR, "executor": (str, type(None))}


def read_status(path: Path) -> dict[str, Any] | None:
    """The status of the run folder `path`; None when the run has never been launched.

    A status.json that cannot be read (binary garbage, a truncated copy, no valid state) is never
    taken as "new": the run reads as failed with a reason naming the file and what to do, so a
    launch skips it, `status` lists it beside every other run, and --retry-failed resumes it from
    its last checkpoint (rewriting the file) or --force starts it over."""
    f = Path(path) / "status.json"
    try:
        data = atomic.read_json(f)
    except FileNotFoundError:
        return None
    except (OSError, atomic.CorruptFile) as e:
        return _unreadable(f, str(getattr(e, "reason", e)))
    if not isinstance(data, dict) or data.get("state") not in STATES:
        return _unreadable(f, f"no valid state: {data!r:.80}")
    bad = [k for k, types in FIELD_TYPES.items() if not isinstance(data.get(k), types)]
    return _unreadable(f, f"field(s) {', '.join(bad)} of the wrong type") if bad else data


def _unreadable(f: Path, why: str) -> dict[str, Any]:
    return {"state": "failed", "unreadable": True,
            "reason": f"unreadable {f} ({why}): relaunch with --retry-failed to resume the run from its last "
                      f"checkpoint (rewrites the file), or --force to start it over"}


def write_status(path: Path, state: str, **fields: Any) -> dict[str, Any]:
    """Set the state of run folder `path`, keeping earlier fields (step, loss, job_id) unless given.

    The primitive under the transitions below (tests also use it to set a run up in a state)."""
    if state not in STATES:
        raise ValueError(f"unknown run state {state!r}; expected one of {STATES}")
    old = read_status(path) or {}
    old.pop("unreadable", None)  # a write replaces an unreadable file
    new = {**old, **fields, "state": state, "updated": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    if state in ("pending", "running", "requeued", "finished"):
        new.setdefault("reason", None)
        if "reason" not in fields:
            new["reason"] = None  # a resumed run drops the reason it stopped for
    atomic.write_json(Path(path) / "status.json", new)
    return new


# ----------------------------------------------------------------------------- transitions
def submitted(cfg: RunConfig, executor: str, **facts: Any) -> dict[str, Any]:
    """Handed to an executor (local: the launcher's pid until the child claims it; slurm: the job id)."""
    return write_status(cfg.run_dir, "pending", executor=executor, **facts)


def started(path: Path, executor: str, job_id: str | None = None) -> dict[str, Any]:
    """A job holds the run's claim and computes it."""
    return write_status(path, "running", executor=executor, **here(), **({"job_id": job_id} if job_id else {}))


PROGRESS_FACTS = ("total_steps", "images_per_s", "s_per_step", "eta_s", "val_loss")  # for `launch.py status`


def update_progress(path: Path, step: int, loss: float | None, **facts: Any) -> None:
    """Called by the training loop at its log steps (rank 0 only): the state stays running.

    facts: any of PROGRESS_FACTS (None values are left out, earlier values kept)."""
    unknown = set(facts) - set(PROGRESS_FACTS)
    if unknown:
        raise ValueError(f"update_progress: unknown facts {sorted(unknown)}; expected some of {PROGRESS_FACTS}")
    write_status(path, "running", step=int(step), loss=None if loss is None else float(loss),
                 **{k: v for k, v in facts.items() if v is not None})


def finished(path: Path, step: int | None, loss: float | None) -> dict[str, Any]:
    return write_status(path, "finished", step=step, loss=loss, stage=None, encoder=None)


def failed(path: Path, reason: str, encoder: Path | None = None) -> dict[str, Any]:
    """The job failed; with `encoder`, in an evaluation after pretraining finished (stage eval)."""
    stage = {"stage": "eval", "encoder": str(encoder)} if encoder is not None else {}
    return write_status(path, "failed", reason=reason, **stage)


def cancelled(path: Path, reason: str) -> dict[str, Any]:
    return write_status(path, "cancelled", reason=reason)


def requeued(path: Path, job_id: str | None) -> dict[str, Any]:
    """Preempted or timed out: SLURM requeues the same job, which resumes from last.pt."""
    return write_status(path, "requeued", job_id=job_id,
                        reason=f"requeued as SLURM job {job_id} (preempted or timed out): waiting in the queue")


def evaluations_settled(path: Path, failures: str | None) -> dict[str, Any] | None:
    """After evaluations ran alone: failed (stage eval) while one's last attempt failed, finished again
    once none has (a run failed in pretraining stays as it is)."""
    if failures:
        return failed(path, failures, encoder=Path(path) / "encoder.pt")
    st = read_status(path) or {}
    if st.get("state") == "failed" and st.get("stage") == "eval":
        return write_status(path, "finished", reason=None, stage=None, encoder=None)
    return None


def ended_outside(cfg: RunConfig, state: str, reason: str) -> dict[str, Any]:
    """A state that no live job recorded (a killed child, a SLURM job that ended unseen): status.json,
    and the MLflow run brought to the same state."""
    new = write_status(cfg.run_dir, state, reason=reason)
    mirror(cfg)
    return new


def ended_by_exit(cfg: RunConfig, exitcode: int | None, why: str = "") -> dict[str, Any] | None:
    """A job process that exited without recording its end (status still pending/running): the one
    rule for what its exit code means. Killed by a stop signal -> interrupted (a plain relaunch
    resumes it from last.pt); any other exit -> failed. None when the job had recorded its end."""
    if (read_status(cfg.run_dir) or {}).get("state") not in ("pending", "running"):
        return None
    if exitcode is not None and exitcode < 0:
        sig = signal.Signals(-exitcode)
        if sig in STOP_SIGNALS:
            hint = " (kill -9 or the OOM killer)" if sig == signal.SIGKILL else ""
            return ended_outside(cfg, "interrupted", f"killed by {sig.name}{hint}{why}: relaunch to resume "
                                                     "from the last checkpoint")
        return ended_outside(cfg, "failed", f"crashed with {sig.name}{why}")
    return ended_outside(cfg, "failed", f"process exited with code {exitcode}{why}")


def mirror(cfg: RunConfig) -> None:
    """Bring the config's MLflow run to the state status.json holds (best effort, see mark_state)."""
    from roma.tracking import mark_state

    st = read_status(cfg.run_dir) or {}
    if st.get("state"):
        mark_state(cfg, st["state"], st.get("reason"))


def here() -> dict[str, Any]:
    """Facts that tell whether a recorded local process is this machine's and still alive."""
    return {"host": socket.gethostname(), "pid": os.getpid()}


def local_process_alive(status: dict[str, Any]) -> bool:
    if status.get("host") != socket.gethostname() or not status.get("pid"):
        return False
    pid = int(status["pid"])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not _zombie(pid)


def _zombie(pid: int) -> bool:
    """A process that has exited but was not reaped (its parent died, and no init reaps it in a
    container) still answers kill(pid, 0): it computes nothing."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] == "Z"
    except (OSError, IndexError):
        return False
