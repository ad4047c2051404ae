"""`<run_dir>/claim.lock`: which process computes a run, held as an exclusive lock.

    with claim(run_dir):        # raises RunClaimed naming the holder (host, pid, start time)
        execute(cfg)
    holder(run_dir)             # {"host", "pid", "started"} while a process holds it, else None

The job process takes the claim before it writes `running` and keeps it until it exits; the
kernel drops the lock when that process dies however it dies, so a claim is never stale. Two
launches of one run cannot both compute it: the second finds the claim held and reports the run
as active. flock works across machines on NFSv4 and Lustre/GPFS with locking enabled.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

CLAIM = "claim.lock"


class RunClaimed(RuntimeError):
    """Another process computes this run."""

    def __init__(self, run_dir: Path, who: dict[str, Any]):
        self.who = who
        super().__init__(f"run {Path(run_dir).name} is already being computed by pid {who.get('pid')} on "
                         f"{who.get('host')} (since {who.get('started')})")


def _read(f) -> dict[str, Any]:
    f.seek(0)
    try:
        data = json.loads(f.read() or "{}")
    except ValueError:  # not JSON, or not UTF-8: the holder is unknown, the lock still tells it is held
        data = {}
    return data if isinstance(data, dict) else {}


@contextlib.contextmanager
def claim(run_dir: Path) -> Iterator[dict[str, Any]]:
    """Hold the run's claim for the duration of the block; RunClaimed when another process has it."""
    path = Path(run_dir) / CLAIM
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+", encoding="utf-8") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunClaimed(run_dir, _read(f)) from None
        me = {"host": socket.gethostname(), "pid": os.getpid(),
              "started": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        f.seek(0)
        f.truncate()
        f.write(json.dumps(me) + "\n")
        f.flush()
        try:
            yield me
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def holder(run_dir: Path) -> dict[str, Any] | None:
    """The claim's holder while some process holds it; None when the run is free."""
    path = Path(run_dir) / CLAIM
    try:
        f = open(path, encoding="utf-8")
    except FileNotFoundError:
        return None
    with f:
        try:
            fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read(f) or {"host": "?", "pid": None, "started": None}
        fcntl.flock(f, fcntl.LOCK_UN)
        return None
