"""execute(RunConfig): pretraining, then each evaluation the config names, all in one MLflow run.

This is the one entry point a job calls (roma.launch.job); calling it again on the same config
resumes pretraining from last.pt and skips evaluations whose results file already exists. It owns
the run's MLflow run: opened once here, ended here as FINISHED, FAILED or KILLED. A failed
evaluation leaves the finished pretraining (encoder.pt, last.pt) as it is: a relaunch reruns only
the evaluations that have no results.json.

    <run_dir>/eval/<name>/results.json   one per evaluation: {"metrics": {...}, "seconds": s}
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any, Callable

from roma import atomic
from roma.config import RunConfig, to_plain
from roma.train.hooks import Hooks, TrainHooks


def evaluations(cfg: RunConfig) -> list[tuple[str, str, Any, bool]]:
    """(name, kind, sub-config, random_init) for every evaluation in cfg.eval, names unique."""
    out: list[tuple[str, str, Any, bool]] = []
    for p in cfg.eval.probes:
        tag = f"probe_{p.dataset}_{p.protocol}_{p.scan}_{p.readout}"
        out.append((tag, "probe", p, False))
        if cfg.eval.random_init_baseline:
            out.append((f"random_{tag}", "probe", p, True))
    for d in cfg.eval.dense:
        out.append((f"dense_{d.task}_{d.scan}", "dense", d, False))
    # two evaluations of one kind that differ elsewhere (ratios, img_size, ...): tell them apart by
    # a hash of their config, so each keeps its own results folder across relaunches
    names = [n for n, *_ in out]
    out = [(f"{n}_{_short_hash(sub)}" if names.count(n) > 1 else n, kind, sub, rand)
           for n, kind, sub, rand in out]
    names = [n for n, *_ in out]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"cfg.eval names the same evaluation twice: {dupes}")
    return out


def _short_hash(sub_cfg: Any) -> str:
    blob = json.dumps(to_plain(sub_cfg), sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:6]


def _runner(kind: str) -> Callable[..., dict[str, float]]:
    if kind == "probe":
        from roma.eval.classification import run_probe

        return run_probe
    from roma.eval.dense import run_dense

    return run_dense


def run_evaluation(name: str, kind: str, sub_cfg: Any, random_init: bool, cfg: RunConfig, encoder: Path,
                   out_root: Path, device: str) -> dict[str, float]:
    """Run one evaluation (or read its results.json when it already finished)."""

    out_dir = out_root / name
    results = out_dir / "results.json"
    if results.exists():
        return {k: float(v) for k, v in json.loads(results.read_text())["metrics"].items()}
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    metrics = _runner(kind)(None if random_init else encoder, sub_cfg, cfg.model, out_dir, device)
    if random_init:
        metrics = {f"random_{k}": v for k, v in metrics.items()}
    metrics = {k: float(v) for k, v in metrics.items()}
    atomic.write_json(results, {"metrics": metrics, "seconds": round(time.time() - t0, 1)})
    return metrics


class EvaluationError(RuntimeError):
    """One or more evaluations failed after pretraining finished (its encoder.pt stays usable)."""

    def __init__(self, failures: dict[str, str]):
        self.failures = failures
        super().__init__("evaluation failed (pretraining finished; relaunch with --retry-failed to rerun "
                         "only the evaluations): " + "; ".join(f"{k}: {v}" for k, v in failures.items()))


def finalize_tracking(tracker, cfg: RunConfig, result: dict[str, Any]) -> None:
    """Artifacts of a finished pretraining: the config, the loss curve, the encoder path; final_loss."""
    from roma.tracking import plot_loss_curve
    from roma.validation import dump_config

    rd = cfg.run_dir
    tracker.log_text(dump_config(cfg), "config.yaml")
    curve = plot_loss_curve(tracker.metric_history("loss"), rd / "loss_curve.png", title=cfg.run_id)
    tracker.log_artifact(curve)
    tracker.set_tags({"encoder_path": str(Path(result["encoder"]).resolve())})
    if result["final_loss"] is not None:
        tracker.log_metrics({"final_loss": result["final_loss"]}, step=result["step"])


def _rank() -> int:
    return int(os.environ.get("RANK", "0"))


def execute(cfg: RunConfig, hooks: TrainHooks | None = None, data=None) -> dict[str, Any]:
    """Pretrain (resuming if possible), evaluate, and log everything into the run's one MLflow run.

    hooks: the caller's training hooks (roma.launch.job: status progress, preemption).
    data: replaces the pretraining data builder (tests, benchmarks; see roma.train.pretrain).
    Raises EvaluationError when pretraining finished but an evaluation failed (the others still run).
    """
    import torch

    from roma.tracking import Tracker, TrackingHooks
    from roma.train.pretrain import pretrain

    rd = cfg.run_dir
    if _rank() != 0:  # other DDP ranks only compute; rank 0 owns the run folder's reports and tracking
        return pretrain(cfg, rd, hooks=None, data=data)
    tracker = Tracker.open(cfg, rd)
    stage = "pretrain"
    try:
        result = pretrain(cfg, rd, hooks=Hooks(TrackingHooks(tracker, cfg), hooks), data=data)
        result["mlflow_run_id"] = tracker.run_id
        if result["trained"]:
            finalize_tracking(tracker, cfg, result)
        stage = "eval"
        device = "cuda" if torch.cuda.is_available() else "cpu"
        failures: dict[str, str] = {}
        for name, kind, sub, rand in evaluations(cfg):
            tracker.set_tags({"eval": name})
            try:
                metrics = run_evaluation(name, kind, sub, rand, cfg, Path(result["encoder"]), rd / "eval", device)
            except Exception as e:  # noqa: BLE001 - the other evaluations still run; reported below
                failures[name] = f"{type(e).__name__}: {e}"
                continue
            tracker.log_metrics(metrics)
            result.update(metrics)
        if failures:
            raise EvaluationError(failures)
    except BaseException as e:
        if isinstance(e, Exception):
            tracker.end("failed", f"{type(e).__name__}: {e}", stage)
        else:  # KeyboardInterrupt, SystemExit (a SLURM requeue): the run continues later
            tracker.end("cancelled")
        raise
    tracker.end("finished")
    return result
