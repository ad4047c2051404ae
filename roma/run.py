"""execute(RunConfig): pretraining, then each evaluation the config names, all in one MLflow run.

This is the one entry point a job calls (roma.launch.job); calling it again on the same config
resumes pretraining from last.pt and skips evaluations whose results file already exists.

    <run_dir>/eval/<name>/results.json   one per evaluation: {"metrics": {...}, "seconds": s}
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any, Callable

from roma import atomic
from roma.config import RunConfig, to_plain


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


def execute(cfg: RunConfig) -> dict[str, Any]:
    """Pretrain (resuming if possible), evaluate, and log everything into the run's MLflow run."""
    import torch

    from roma.tracking import Tracker
    from roma.train.pretrain import pretrain

    rd = cfg.run_dir
    result = pretrain(cfg, rd, finish_run=False)
    if result["rank"] != 0:  # evaluations and tracking are rank 0's
        return result
    device = "cuda" if torch.cuda.is_available() else "cpu"
    tracker = Tracker.open(cfg, rd, resume_run_id=result["mlflow_run_id"], last_step=result["step"])
    state = "failed"
    try:
        for name, kind, sub, rand in evaluations(cfg):
            tracker.set_tags({"eval": name})
            metrics = run_evaluation(name, kind, sub, rand, cfg, Path(result["encoder"]), rd / "eval", device)
            tracker.log_metrics(metrics)
            result.update(metrics)
        state = "finished"
    except BaseException as e:
        if isinstance(e, Exception):
            tracker.set_tags({"failure_reason": f"{type(e).__name__}: {e}"[:4000]})
        else:
            state = "cancelled"
        raise
    finally:
        tracker.end(state)
    return result
