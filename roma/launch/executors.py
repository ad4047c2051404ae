"""Executors: how the runs a launch selected get computed.

debug: in this process, one after another; the first error stops the launch (for pdb/tracebacks).
local: one spawned child process per run, one after another (a crash or OOM of one run cannot take
       the launcher down; torch in the child uses all cores). The child dies with the launcher: a
       SIGTERM/SIGHUP to the launcher is passed on to it, and the kernel sends it SIGTERM when the
       launcher dies any other way (PR_SET_PDEATHSIG). A child killed by a signal is `interrupted`
       (a plain relaunch resumes it), one that raised is `failed` (roma.launch.status.ended_by_exit).
slurm: one submitit job array per spec (see roma.launch.slurm).
"""
from __future__ import annotations

import contextlib
import ctypes
import multiprocessing as mp
import os
import signal
import sys
import threading
import traceback
from typing import Any, Iterator

from roma.config import RunConfig
from roma.launch.claim import RunClaimed, holder
from roma.launch.job import run_one
from roma.launch import status as run_state
from roma.launch.status import here, read_status, run_dir
from roma.naming import run_name
from roma.torchfile import UnreadableCheckpoint

CLAIMED_EXIT = 75  # a child that found the run claimed by another process (EX_TEMPFAIL)


def _say(msg: str) -> None:
    print(msg, flush=True)


def run_debug(runs: list[RunConfig], execute_target: str | None = None) -> dict[str, str]:
    """-> {run_id: final state}. Exceptions propagate after the run is marked failed."""
    states = {}
    for i, cfg in enumerate(runs):
        _say(f"[{i + 1}/{len(runs)}] {run_name(cfg)} ({cfg.run_id}) debug")
        try:
            run_one(cfg, execute_target, executor="debug")
        except RunClaimed as e:
            _say(f"    -> skipped: {e}")
            states[cfg.run_id] = "active"
            continue
        states[cfg.run_id] = "finished"
    return states


PR_SET_PDEATHSIG = 1


def _die_with(parent: int) -> None:
    """SIGTERM to this process when the launcher dies, however it dies (Linux; elsewhere a no-op)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # it died before the line above
        os.kill(os.getpid(), signal.SIGTERM)


class Terminated(Exception):
    """The launcher got SIGTERM or SIGHUP."""

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(signal.Signals(signum).name)


@contextlib.contextmanager
def _stop_signals_raise() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield
        return

    def handler(signum, frame):
        raise Terminated(signum)

    old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _child(cfg_dict: dict, execute_target: str | None, parent: int | None = None) -> None:
    if parent is not None:
        _die_with(parent)
    try:
        run_one(cfg_dict, execute_target, executor="local")
    except RunClaimed as e:
        print(f"    -> skipped: {e}", flush=True)
        sys.exit(CLAIMED_EXIT)
    except KeyboardInterrupt:
        sys.exit(130)
    except UnreadableCheckpoint as e:  # one line says it all (file, reason, what to do); error.txt has the rest
        print(f"    -> {e}", file=sys.stderr, flush=True)
        sys.exit(1)
    except Exception:
        traceback.print_exc()  # also recorded in status.json (reason) and error.txt
        sys.exit(1)


def run_local(runs: list[RunConfig], execute_target: str | None = None) -> dict[str, str]:
    """-> {run_id: final state}. Runs one child process at a time; Ctrl-C cancels the current run.

    A run another process computes (it holds the run's claim) is skipped as "active"."""
    ctx = mp.get_context("spawn")  # a clean interpreter: no inherited torch threads or locks
    states: dict[str, str] = {}
    for i, cfg in enumerate(runs):
        _say(f"[{i + 1}/{len(runs)}] {run_name(cfg)} ({cfg.run_id}) local")
        d = run_dir(cfg)
        who = holder(d)
        if who is not None:
            _say(f"    -> skipped: already being computed by pid {who.get('pid')} on {who.get('host')}")
            states[cfg.run_id] = "active"
            continue
        run_state.submitted(cfg, "local", **here())  # the launcher's pid until the child claims it
        proc = ctx.Process(target=_child, args=(cfg.to_dict(), execute_target, os.getpid()), name=f"roma-{cfg.run_id}")
        try:
            with _stop_signals_raise():
                proc.start()
                proc.join()
        except Terminated as t:  # pass it on: the child must not train on alone
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=30)
            if proc.is_alive():
                proc.kill()
                proc.join()
            run_state.ended_by_exit(cfg, proc.exitcode, f" (the launcher got {t})")
            _say(f"    -> interrupted: the launcher got {t}; relaunch to resume")
            raise SystemExit(128 + t.signum) from None
        except KeyboardInterrupt:
            proc.join(timeout=30)  # the child got the same SIGINT and records "cancelled" itself
            if proc.is_alive():
                proc.terminate()
                proc.join()
            if (read_status(d) or {}).get("state") in ("pending", "running"):
                run_state.cancelled(d, "interrupted (Ctrl-C)")
            raise
        if proc.exitcode == CLAIMED_EXIT:  # another launch won the claim: its run, its status
            states[cfg.run_id] = "active"
            continue
        run_state.ended_by_exit(cfg, proc.exitcode)  # killed from outside: the child could not record it
        status = read_status(d) or {}
        state = status.get("state")
        states[cfg.run_id] = state or "failed"
        _say(f"    -> {state}" + (f": {status.get('reason')}" if state in ("failed", "interrupted") else ""))
    return states


EXECUTORS: dict[str, Any] = {"debug": run_debug, "local": run_local}
