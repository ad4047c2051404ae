"""`<output_root>/<experiment>/<run_id>/status.json`: the state of one run, written atomically.

    {"state": "pending|running|finished|failed|cancelled", "step": int|None, "loss": float|None,
     "reason": str|None, "updated": ISO-8601 UTC, ...executor facts: "executor", "job_id", "host", "pid"}

The launcher writes pending (submitted), the job (roma.launch.job) running / finished / failed /
cancelled, and the training loop's progress through the job's hooks (`update_progress`, state stays
running). A run whose evaluation failed after pretraining finished is failed with "stage": "eval"
and "encoder": its usable encoder.pt; --retry-failed reruns only the evaluations.
"""
from __future__ import annotations

import json
import os
import socket
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from roma import atomic
from roma.config import RunConfig

STATES = ("pending", "running", "finished", "failed", "cancelled")


def run_dir(cfg: RunConfig) -> Path:
    return cfg.run_dir


def read_status(path: Path) -> dict[str, Any] | None:
    """The status of the run folder `path`; None when the run has never been launched."""
    f = Path(path) / "status.json"
    try:
        data = json.loads(f.read_text())
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError) as e:  # never silently treat a broken file as "new"
        return {"state": "failed", "reason": f"unreadable status.json: {e}"}
    return data if isinstance(data, dict) and data.get("state") in STATES else \
        {"state": "failed", "reason": f"status.json holds no valid state: {data!r:.80}"}



def write_status(path: Path, state: str, **fields: Any) -> dict[str, Any]:
    """Set the state of run folder `path`, keeping earlier fields (step, loss, job_id) unless given."""
    if state not in STATES:
        raise ValueError(f"unknown run state {state!r}; expected one of {STATES}")
    old = read_status(path) or {}
    new = {**old, **fields, "state": state, "updated": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    if state in ("pending", "running", "finished"):
        new.setdefault("reason", None)
        if "reason" not in fields:
            new["reason"] = None  # a resumed run drops the reason it stopped for
    atomic.write_json(Path(path) / "status.json", new)
    return new


def update_progress(path: Path, step: int, loss: float | None) -> None:
    """Called by the training loop at its log steps (rank 0 only)."""
    write_status(path, "running", step=int(step), loss=None if loss is None else float(loss))


def here() -> dict[str, Any]:
    """Facts that tell whether a recorded local process is this machine's and still alive."""
    return {"host": socket.gethostname(), "pid": os.getpid()}


def local_process_alive(status: dict[str, Any]) -> bool:
    if status.get("host") != socket.gethostname() or not status.get("pid"):
        return False
    try:
        os.kill(int(status["pid"]), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
