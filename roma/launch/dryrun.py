"""`launch.py SPEC --dry-run [--json]`: what each run would compute and cost, before any data exists.

Per run: model, data size (the subset size, or the images under an existing root), epochs, global
batch, peak lr (roma.train.optim.base_lr) and how this cluster cuts it (world size x device batch x accumulation), optimizer steps,
images seen, the evaluations, and GPU-hours / wall time from experiments/throughput.csv for the
device type and count the executor gives (roma.launch.budget). Nothing here needs the data: a
missing root is one of the spec's warnings (roma.spec.load_spec(dry_run=True)).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from roma.config import RunConfig
from roma.launch import budget
from roma.naming import format_size, run_name
from roma.train.batching import BatchLayout, BatchLayoutError, Schedule, layout, schedule
from roma.train.optim import base_lr


@dataclass(frozen=True)
class Devices:
    """Where the runs would execute: the device type as the throughput table names it, and how many."""

    gpu_type: str | None  # None: unknown (a profile without gpu_type)
    count: int  # devices (= DDP ranks) per run
    where: str  # "profile example_a100", "this machine"


def profile_devices(cfg: RunConfig, profile: dict[str, Any]) -> Devices:
    """One task per GPU on each node (roma.launch.slurm), one CPU task per node without GPUs."""
    res = cfg.resources
    return Devices(profile.get("gpu_type"), res.nodes * max(res.gpus_per_node, 1), f"profile {profile['name']}")


def local_devices() -> Devices:
    """The local executor runs one process per run: one device, the first GPU if there is one."""
    import torch

    if not torch.cuda.is_available():
        return Devices("cpu", 1, "this machine")
    name = torch.cuda.get_device_name(0).lower()
    known = [t for t in budget.gpu_types() if t != "cpu" and t in name.replace(" ", "")]
    return Devices(max(known, key=len) if known else name, 1, "this machine")


@dataclass
class RunPlan:
    cfg: RunConfig
    data_size: int | None  # unique images (None: unknown without data)
    layout: BatchLayout | None
    schedule: Schedule | None
    evaluations: list[str]
    estimate: budget.Estimate | budget.NoEntry | None
    problem: str = ""  # why a quantity is unknown (no data size, a layout that does not fit)

    @property
    def epochs(self) -> float | int | None:
        """Passes over the data: train.epochs, or with train.steps (fixed steps) what the steps make."""
        s = self.schedule
        if not self.cfg.train.steps:
            return self.cfg.train.epochs
        return round(s.total_steps / s.steps_per_epoch, 2) if s else None

    def to_json(self) -> dict[str, Any]:
        s, lay = self.schedule, self.layout
        return {"run_id": self.cfg.run_id, "name": run_name(self.cfg), "config": self.cfg.to_dict(),
                "global_batch": self.cfg.train.global_batch, "peak_lr": base_lr(self.cfg.train),
                "epochs": self.epochs,
                "data_size": self.data_size, "steps": s.total_steps if s else None,
                "images_seen": s.images_seen if s else None, "evaluations": self.evaluations,
                "layout": dataclasses.asdict(lay) if lay else None,
                "estimate": estimate_json(self.estimate, self.problem)}


def estimate_json(est: budget.Estimate | budget.NoEntry | None, problem: str = "") -> dict[str, Any]:
    if isinstance(est, budget.Estimate):
        return {"gpu_type": est.gpu_type, "gpu_count": est.gpu_count, "gpu_hours": round(est.gpu_hours, 2),
                "wall_hours": round(est.wall_hours, 2), "images_per_s": round(est.images_per_s, 1),
                "throughput_row": est.row.name, "basis": est.row.basis, "assumptions": list(est.assumptions)}
    return {"gpu_hours": None, "wall_hours": None,
            "error": est.message if isinstance(est, budget.NoEntry) else problem or "no estimate"}


def data_size(cfg: RunConfig, counts: dict[str, int | str | None]) -> int | None:
    """The run's unique images: the subset size, else the images under its root if the root exists
    (a root that could not be listed holds the reason in `counts`: no size)."""
    if cfg.data.subset is not None:
        return cfg.data.subset
    n = counts.get(cfg.data.root)
    return n if isinstance(n, int) else None


def evaluation_names(cfg: RunConfig) -> list[str]:
    from roma.eval.plan import evaluations

    return [name for name, *_ in evaluations(cfg)]


def plan_run(cfg: RunConfig, devices: Devices, counts: dict[str, int | None]) -> RunPlan:
    n = data_size(cfg, counts)
    problems = []
    try:
        lay = layout(cfg.train.global_batch, devices.count, cfg.train.max_device_batch)
    except BatchLayoutError as e:
        lay = None
        problems.append(str(e))
    sch = est = None
    if n is None:
        problems.append("data size unknown: no data.subset and no data at data.root")
    else:
        try:
            sch = schedule(cfg.train, n)
        except ValueError as e:
            problems.append(str(e))
    if sch is None or lay is None:
        pass  # no estimate: its reason is in `problems`
    elif devices.gpu_type is None:
        problems.append(f"{devices.where} names no gpu_type: no estimate")
    else:
        est = budget.estimate(cfg.model.name, cfg.model.img_size, devices.gpu_type, devices.count, sch.images_seen)
    return RunPlan(cfg, n, lay, sch, evaluation_names(cfg), est, "; ".join(problems))


def _hours(h: float) -> str:
    return f"{h:,.0f}" if h >= 100 else f"{h:,.1f}" if h >= 1 else f"{h:.2g}"


def _wall(h: float) -> str:
    return f"{_hours(h)} h" if h >= 1 else f"{h * 60:.0f} min"


def format_lr(lr: float) -> str:
    """1.5e-4 -> 1.50e-4."""
    mantissa, _, exp = f"{lr:.2e}".partition("e")
    return f"{mantissa}e{int(exp)}"


def table_row(p: RunPlan) -> list[object]:
    """id, name, model, data, epochs, global batch, peak lr, layout, steps, images seen, evaluations, estimate."""
    lay = f"{p.layout.world_size}x{p.layout.device_batch}x{p.layout.accum_steps}" if p.layout else "refused"
    est = p.estimate
    if isinstance(est, budget.Estimate):
        cost = f"{_hours(est.gpu_hours)} ({_wall(est.wall_hours)})"
    else:
        cost = "?"
    s = p.schedule
    return [p.cfg.run_id, run_name(p.cfg), p.cfg.model.name, format_size(p.data_size) if p.data_size else "?",
            p.epochs if p.epochs is not None else "?", p.cfg.train.global_batch, format_lr(base_lr(p.cfg.train)), lay,
            f"{s.total_steps:,}" if s else "?",
            format_size(s.images_seen, 3) if s else "?", len(p.evaluations), cost]


HEADERS = ["id", "name", "model", "data", "epochs", "batch", "peak lr", "ranks x dev x acc", "steps", "images seen",
           "evals", "GPU-h (wall)"]


def notes(plans: list[RunPlan], devices: Devices) -> list[str]:
    """The lines under the table: the device, the totals, the evaluations, the estimates' basis."""
    ests = [p.estimate for p in plans if isinstance(p.estimate, budget.Estimate)]
    out = [f"devices: {devices.count} x {devices.gpu_type or '?'} per run ({devices.where}); "
           "batch = global batch; peak lr = train.blr x global batch / 256 (after warm-up); "
           "ranks x dev x acc = world size x images per device x accumulation steps"]
    if ests:
        unit = f"{ests[0].gpu_type.upper()}-hours"
        out.append(f"total: {_hours(sum(e.gpu_hours for e in ests))} {unit} for {len(ests)} of {len(plans)} runs "
                   f"(pretraining only; evaluations, start-up and checkpoints not included)")
    evals = sorted({e for p in plans for e in p.evaluations})
    out.append(f"evaluations: {', '.join(evals) if evals else 'none'}")
    rows = {e.row.name: e.row for e in ests}
    for row in rows.values():
        out.append(f"throughput {row.name}: {row.images_per_s:g} img/s per device, {row.basis}: {row.source}")
    for a in sorted({a for e in ests for a in e.assumptions if not a.startswith(tuple(rows))}):
        out.append(f"assumption: {a}")
    for p in plans:
        if p.problem:
            out.append(f"{p.cfg.run_id} {run_name(p.cfg)}: {p.problem}")
        elif isinstance(p.estimate, budget.NoEntry):
            out.append(f"{p.cfg.run_id} {run_name(p.cfg)}: {p.estimate.message}")
    return out
