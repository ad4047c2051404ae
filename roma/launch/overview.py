"""`launch.py status SPEC`: one row per run (state, step/total, images/s, ETA, losses, evaluation
metrics) and a footer with the sweep's totals and ETA.

Everything comes from the run folders, no MLflow query: status.json (the job's progress reports:
step, total_steps, images_per_s, s_per_step, eta_s, loss, val_loss; roma.launch.job.JobHooks) and
eval/<name>/results.json. A run's ETA is the job's own estimate at its last report, less the time
since; a run that has not started yet is estimated at the seconds per step measured on a run of the
same model, resolution and batch. The sweep's ETA adds the runs up (the local executor runs them one
after another) or, when they went to SLURM, takes the longest (they run side by side).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from roma.config import RunConfig
from roma.launch.plan import reconcile
from roma.launch.status import read_status
from roma.launch.table import fmt_loss, render
from roma.naming import run_name
from roma.progress import fmt_seconds

ENDED = ("finished", "failed", "cancelled")
HEADERS = ["id", "name", "state", "step", "images/s", "ETA", "loss", "val_loss", "evaluations", "job", "updated",
           "reason"]


@dataclass
class RunRow:
    cfg: RunConfig
    state: str
    step: int | None = None
    total: int | None = None  # the job's total_steps, else the planned one (None: data size unknown)
    images_per_s: float | None = None
    s_per_step: float | None = None  # measured over the job's attempt (evaluations of held-out loss included)
    eta_s: float | None = None  # pretraining time left (None: unknown; 0 once the pretraining is done)
    loss: float | None = None
    val_loss: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)  # done evaluations' metrics
    executor: str | None = None
    job: str | None = None
    updated: str | None = None
    reason: str | None = None

    def cells(self) -> list[object]:
        step = None if self.step is None and self.total is None else \
            f"{self.step if self.step is not None else 0}/{self.total if self.total is not None else '?'}"
        m = self.metrics  # a metric with its spread over seeds: "aid_oa_tr50 41.78+-0.52"
        evals = ", ".join(f"{k} {v:.2f}" + (f"+-{m[k + '_std']:.2f}" if k + "_std" in m else "")
                          for k, v in sorted(m.items()) if not (k.endswith("_std") and k[:-4] in m)) or None
        return [self.cfg.run_id, run_name(self.cfg), self.state, step,
                None if self.images_per_s is None else f"{self.images_per_s:.1f}", _eta(self), fmt_loss(self.loss),
                fmt_loss(self.val_loss), evals, self.job, (self.updated or "")[:19] or None, self.reason]


def _eta(r: RunRow) -> str | None:
    if r.state == "finished":
        return None
    if r.eta_s is None:
        return "?" if r.state not in ENDED else None
    return fmt_seconds(r.eta_s) if r.state not in ENDED else None


def evaluation_metrics(cfg: RunConfig) -> dict[str, float]:
    """The metrics of cfg's evaluations that are done (their results.json)."""
    from roma.eval.plan import evaluations
    from roma.run import read_results, results_path

    out: dict[str, float] = {}
    for name, *_ in evaluations(cfg):
        try:
            out.update(read_results(results_path(cfg, name), name))
        except (OSError, ValueError):  # not done, or unreadable (`launch.py eval` names it): not shown here
            continue
    return out


def planned_total(cfg: RunConfig, counts: dict[str, int | None]) -> int | None:
    """The run's optimizer steps as the dry run plans them (None: data size unknown)."""
    from roma.launch.dryrun import data_size
    from roma.train.batching import schedule

    n = data_size(cfg, counts)
    try:
        return schedule(cfg.train, n).total_steps if n else None
    except ValueError:
        return None


def _since(iso: str | None) -> float:
    try:
        return max(0.0, (datetime.now(timezone.utc) - datetime.fromisoformat(iso)).total_seconds())
    except (TypeError, ValueError):
        return 0.0


def run_row(cfg: RunConfig, st: dict[str, Any] | None, counts: dict[str, int | None] | None = None) -> RunRow:
    st = st or {"state": "new"}
    total = st.get("total_steps") or planned_total(cfg, counts or {})
    row = RunRow(cfg, st.get("state", "new"), st.get("step"), total, st.get("images_per_s"), st.get("s_per_step"),
                 None, st.get("loss"), st.get("val_loss"), evaluation_metrics(cfg), st.get("executor"),
                 st.get("job_id"), st.get("updated"), st.get("reason"))
    pretrained = (cfg.run_dir / "encoder.pt").exists()
    if row.state == "finished" or pretrained:
        row.eta_s = 0.0
    elif row.state == "running" and st.get("eta_s") is not None:
        row.eta_s = max(0.0, float(st["eta_s"]) - _since(st.get("updated")))
    return row


def _key(cfg: RunConfig) -> tuple:
    """Runs whose steps cost the same: one model at one resolution and global batch."""
    return cfg.model.name, cfg.model.img_size, cfg.train.global_batch


def estimate_unstarted(rows: list[RunRow]) -> None:
    """A run with no ETA of its own gets (steps left) x (the seconds per step measured on a like run)."""
    rates: dict[tuple, float] = {}
    for r in rows:
        if r.s_per_step:
            rates.setdefault(_key(r.cfg), r.s_per_step)
    for r in rows:
        if r.eta_s is None and r.state not in ("failed", "cancelled") and r.total and _key(r.cfg) in rates:
            r.eta_s = (r.total - (r.step or 0)) * (r.s_per_step or rates[_key(r.cfg)])


def status_rows(runs: list[RunConfig], counts: dict[str, int | None] | None = None) -> list[RunRow]:
    rows = [run_row(cfg, reconcile(cfg, read_status(cfg.run_dir)), counts) for cfg in runs]
    estimate_unstarted(rows)
    return rows


def table(rows: list[RunRow]) -> str:
    return render(HEADERS, [r.cells() for r in rows])


def footer(rows: list[RunRow]) -> str:
    """The sweep at a glance: runs per state, steps done of all, the time left."""
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.state] = counts.get(r.state, 0) + 1
    order = ["finished", "running", "pending", "requeued", "new", "failed", "cancelled"]
    states = ", ".join(f"{counts[s]} {s}" for s in sorted(counts, key=lambda s: order.index(s) if s in order else 99))
    done = sum((r.total if r.eta_s == 0.0 and r.total else r.step or 0) for r in rows)
    known = [r.total for r in rows if r.total]
    steps = f"{done:,}/{sum(known):,} steps ({100 * done / sum(known):.0f}%)" if known and len(known) == len(rows) \
        else f"{done:,} steps done (total unknown for {len(rows) - len(known)} run(s))"
    todo = [r for r in rows if r.state not in ENDED and not r.eta_s == 0.0]
    unknown = [r for r in todo if r.eta_s is None]
    parallel = any(r.executor == "slurm" for r in rows)
    if not todo:
        eta = "nothing left to pretrain"
    else:
        secs = [r.eta_s for r in todo if r.eta_s is not None]
        notes = []
        if secs:
            notes.append("the longest run: SLURM runs them side by side" if parallel else
                         "runs one after another, as the local executor does")
        if unknown:
            notes.append(f"{len(unknown)} run(s) without a measured rate left out" if secs else
                         "no run of this model, resolution and batch has measured its rate yet")
        notes.append("pretraining only, evaluations not counted")
        eta = f"ETA {fmt_seconds(max(secs) if parallel else sum(secs)) if secs else '?'} ({'; '.join(notes)})"
    stopped = counts.get("failed", 0) + counts.get("cancelled", 0)
    tail = f"; {stopped} failed or cancelled: relaunch (--retry-failed) to continue them" if stopped else ""
    return f"total: {len(rows)} runs: {states}; {steps}; {eta}{tail}"
