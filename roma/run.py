"""execute(RunConfig): pretraining, then each evaluation the config names, all in one MLflow run.

This is the one entry point a job calls (roma.launch.job); calling it again on the same config
resumes pretraining from last.pt and skips evaluations whose results file already exists. It owns
the run's MLflow run: opened once here, ended here as FINISHED, FAILED or KILLED. A failed
evaluation leaves the finished pretraining (encoder.pt, last.pt) as it is: a relaunch reruns only
the evaluations that have no results.json.

    <run_dir>/eval/<name>/results.json   one per evaluation: {"metrics": {...}, "seconds": s}
    <run_dir>/eval/<name>/failed.json    its last failure (removed when it succeeds)

evaluate(cfg, only=[...]) runs evaluations alone on a finished pretraining (`launch.py eval`, the
SLURM evaluation jobs that start after the pretraining job): their metrics are added to the same
MLflow run (the id recorded in <run_dir>/mlflow_run_id).
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable

from roma import atomic
from roma.config import RunConfig
from roma.eval.plan import evaluations
from roma.train.hooks import Hooks, TrainHooks


def _runner(kind: str) -> Callable[..., dict[str, float]]:
    if kind == "probe":
        from roma.eval.classification import run_probe

        return run_probe
    from roma.eval.dense import run_dense

    return run_dense


RESULTS, FAILED = "results.json", "failed.json"


def run_evaluation(name: str, kind: str, sub_cfg: Any, random_init: bool, cfg: RunConfig, encoder: Path,
                   out_root: Path, device: str) -> dict[str, float]:
    """Run one evaluation (or read its results.json when it already finished)."""

    out_dir = out_root / name
    results = out_dir / RESULTS
    if results.exists():
        return read_results(results, name)
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    metrics = _runner(kind)(None if random_init else encoder, sub_cfg, cfg.model, out_dir, device)
    if random_init:
        metrics = {f"random_{k}": v for k, v in metrics.items()}
    metrics = {k: float(v) for k, v in metrics.items()}
    atomic.write_json(results, {"metrics": metrics, "seconds": round(time.time() - t0, 1)})
    return metrics


def select_evaluations(cfg: RunConfig, only: list[str] | tuple[str, ...] | None = None) -> list[str]:
    """Names of cfg's evaluations matching any fnmatch pattern in `only` (all when None or empty)."""
    import fnmatch

    names = [n for n, *_ in evaluations(cfg)]
    if not only:
        return names
    picked = [n for n in names if any(fnmatch.fnmatch(n, pat) for pat in only)]
    if not picked:
        raise ValueError(f"no evaluation of run {cfg.run_id} matches {list(only)}; its evaluations: "
                         + (", ".join(names) or "none"))
    return picked


def run_evaluations(cfg: RunConfig, tracker, encoder: Path, names: list[str] | None = None,
                    force: bool = False) -> tuple[dict[str, float], dict[str, str]]:
    """The named evaluations (all: None) one after another, each logged into `tracker` as it ends.

    -> (metrics, failures {name: error}). A failed evaluation is recorded in eval/<name>/failed.json
    and the others still run; force=True computes it afresh (see _redo): its earlier results stay
    until the new ones are written."""
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    out_root = cfg.run_dir / "eval"
    metrics: dict[str, float] = {}
    failures: dict[str, str] = {}
    logged: dict[str, str] = {}  # metric key -> the evaluation that logged it
    for name, kind, sub, rand in evaluations(cfg):
        if names is not None and name not in names:
            continue
        tracker.set_tags({"eval": name})
        try:
            if force:
                got = _redo(out_root, name, lambda root: run_evaluation(name, kind, sub, rand, cfg, encoder, root, device))
            else:
                got = run_evaluation(name, kind, sub, rand, cfg, encoder, out_root, device)
        except Exception as e:  # noqa: BLE001 - the other evaluations still run; reported by the caller
            failures[name] = f"{type(e).__name__}: {e}"
            atomic.write_json(out_root / name / FAILED, {"error": failures[name], "time": time.time()})
            continue
        clash = sorted(set(got) & set(logged))
        if clash:  # validation refuses configs whose evaluations share keys; a runner must not either
            failures[name] = f"metric keys {clash} were already logged by {sorted({logged[k] for k in clash})}"
            atomic.write_json(out_root / name / FAILED, {"error": failures[name], "time": time.time()})
            continue
        (out_root / name / FAILED).unlink(missing_ok=True)
        logged.update(dict.fromkeys(got, name))
        tracker.log_metrics(got, stage="eval")
        metrics.update(got)
    return metrics, failures


REDO = ".redo"  # eval/.redo/<name>/<name>: a forced evaluation computes here, from scratch
CLAIM_FILE = "claim.lock"  # roma.launch.claim.CLAIM (the launcher's file; roma.run does not import it)


def _redo(out_root: Path, name: str, run: Callable[[Path], dict[str, float]]) -> dict[str, float]:
    """--force: run the evaluation into eval/.redo/<name>/ (a fresh folder: no results, no caches),
    and only once its results.json is written swap it in for eval/<name>. A failed or killed redo
    leaves the earlier results where they were (the caller records failed.json beside them)."""
    import shutil

    redo = out_root / REDO / name  # one per evaluation: each runs under its own claim
    scratch, final, old = redo / name, out_root / name, redo / ".old"
    shutil.rmtree(redo, ignore_errors=True)  # an earlier redo that died: start it again
    try:
        got = run(redo)
    except BaseException:
        shutil.rmtree(redo, ignore_errors=True)
        raise
    if not (scratch / RESULTS).is_file():
        raise RuntimeError(f"evaluation {name} returned without writing {scratch / RESULTS}")
    old.mkdir()
    final.mkdir(parents=True, exist_ok=True)
    for f in final.iterdir():  # eval/<name>/claim.lock stays: this process holds it (roma.launch.job.eval_one)
        if f.name != CLAIM_FILE:
            os.replace(f, old / f.name)
    for f in sorted(scratch.iterdir(), key=lambda f: f.name == RESULTS):  # results.json last: the commit point
        os.replace(f, final / f.name)
    shutil.rmtree(redo, ignore_errors=True)
    return got


def read_results(path: Path, name: str) -> dict[str, float]:
    """The metrics of a finished evaluation's results.json; a named error (what to do) when unreadable."""
    try:
        doc = atomic.read_json(path)
        return {str(k): float(v) for k, v in doc["metrics"].items()}
    except (atomic.CorruptFile, KeyError, TypeError, AttributeError, ValueError) as e:
        why = e.reason if isinstance(e, atomic.CorruptFile) else f"no metrics mapping of numbers ({type(e).__name__}: {e})"
        raise ValueError(f"{path} is unreadable ({why}): rerun this evaluation with "
                         f"`launch.py eval {path.parent.parent.parent} --eval {name} --force`") from None


def failed_evaluations(cfg: RunConfig) -> dict[str, str]:
    """{name: error} of cfg's evaluations whose last attempt failed (eval/<name>/failed.json)."""
    out = {}
    for name, *_ in evaluations(cfg):
        f = cfg.run_dir / "eval" / name / FAILED
        if f.exists():
            try:
                doc = atomic.read_json(f)
                out[name] = str(doc.get("error") if isinstance(doc, dict) else doc)
            except (OSError, atomic.CorruptFile) as e:  # it still says the last attempt failed
                out[name] = f"unreadable {f} ({getattr(e, 'reason', e)})"
    return out


def results_path(cfg: RunConfig, name: str) -> Path:
    """Where evaluation `name` of cfg's run writes its metrics."""
    return cfg.run_dir / "eval" / name / RESULTS


def evaluation_done(cfg: RunConfig, name: str) -> bool:
    """Its results are written and its last attempt did not fail: a failed `--force` redo keeps the
    earlier results (see _redo) but is not done, so a plain relaunch or `eval` takes it up again."""
    return results_path(cfg, name).exists() and not (results_path(cfg, name).parent / FAILED).exists()


def evaluate(cfg: RunConfig, only: list[str] | tuple[str, ...] | None = None, force: bool = False) -> dict[str, Any]:
    """Run evaluations of a finished pretraining alone; their metrics land in the run's MLflow run.

    only: fnmatch patterns of evaluation names (see evaluations()); done evaluations are read back
    from their results.json unless force. Raises FileNotFoundError when the run has no encoder.pt
    (pretraining not finished), EvaluationError when one of them failed (the others still ran)."""
    from roma.tracking import Tracker
    from roma.train.checkpoint import ENCODER

    rd = cfg.run_dir
    encoder = rd / ENCODER
    if not encoder.exists():
        raise FileNotFoundError(f"{rd}: no {ENCODER}: the pretraining of run {cfg.run_id} has not finished; "
                                "launch the spec first")
    names = select_evaluations(cfg, only)
    tracker = Tracker.open(cfg, rd)
    try:
        metrics, failures = run_evaluations(cfg, tracker, encoder, names, force)
    except BaseException:
        tracker.end("cancelled")
        raise
    others = {k: v for k, v in failed_evaluations(cfg).items() if k not in failures}
    if failures or others:  # the run stays failed (stage eval) while any evaluation's last attempt failed
        tracker.end("failed", str(EvaluationError({**failures, **others})), "eval")
    else:
        tracker.end("finished")
    if failures:
        raise EvaluationError(failures)
    return {"mlflow_run_id": tracker.run_id, "evaluations": names, **metrics}


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
    # final_loss: the last training batch's loss (a noisy one-batch number); the held-out losses
    # (val_loss, ...) are step metrics whose last value is the run's
    if result["final_loss"] is not None:
        tracker.log_metrics({"final_loss": result["final_loss"]}, step=result["step"], stage="train")
    tracker.log_metrics(compute_metrics(result), step=result["step"], stage="train")


def compute_metrics(result: dict[str, Any]) -> dict[str, float]:
    """What a pretraining cost: train_flops (forward FLOPs per image x images trained x 3, the usual
    forward + backward estimate) and device_hours (wall clock of its steps x devices, all attempts)."""
    return {"train_flops": 3.0 * result["flops_per_image"] * result["images_trained"],
            "pretrain_flops_per_image": result["flops_per_image"], "device_hours": result["device_hours"]}


def _rank() -> int:
    return int(os.environ.get("RANK", "0"))


def execute(cfg: RunConfig, hooks: TrainHooks | None = None, data=None, evaluate: bool = True) -> dict[str, Any]:
    """Pretrain (resuming if possible), evaluate, and log everything into the run's one MLflow run.

    hooks: the caller's training hooks (roma.launch.job: status progress, preemption).
    data: replaces the pretraining data builder (tests, benchmarks; see roma.train.pretrain).
    evaluate=False: pretraining only (SLURM runs each evaluation as its own job, see evaluate()).
    Raises EvaluationError when pretraining finished but an evaluation failed (the others still run).
    """
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
        if evaluate:
            metrics, failures = run_evaluations(cfg, tracker, Path(result["encoder"]))
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
