"""Run table -> fitted scaling curves: ours per data/model-scaling curve and metric, and the paper's.

Each curve is fitted on the individual runs (every seed a point, so the bootstrap sees seed noise)
and drawn as means +- std over seeds. Percent metrics are fitted as errors, 1 - metric/100
(a law in the error saturates at the irreducible error c, which an accuracy law cannot express).
"""
from __future__ import annotations

import sys

import numpy as np
import pandas as pd

from analysis.fits import FitInputError, fit_scaling
from analysis.laws import LAWS
from analysis.runs import LOSS_METRICS, ablation_labels, available_metrics, error_like, group_seeds, scaling_curves

# The columns of a run table that hold each axis' x (analysis.axes fills them per the chosen convention).
AXES = {"data": "data_x", "model": "param_x"}
PAPER_SECTIONS = {"data": "data_scaling", "model": "model_scaling"}


def _fit_or_warn(where: str, form: str, X, y, **kw):
    """fit_scaling, or None with a warning naming the curve when the law cannot be fitted; the fit's
    own warnings (a collapsed CI, ...) go to stderr with the same name."""
    try:
        res = fit_scaling(form, X, y, **kw)
    except FitInputError as err:
        print(f"warning: {where}: not fitted: {err}", file=sys.stderr)
        return None
    for w in res.warnings:
        print(f"warning: {where}: {w}", file=sys.stderr)
    return res


def _fit(form, x, metric, labels, bootstrap_b, seed, where):
    """One law on (sizes, metric values), the metric fitted as an error (analysis.runs.error_like)."""
    return _fit_or_warn(where, form, x[0][:, None], error_like(metric, x[1]),
                        x_names=("x",), y_name=metric, labels=labels, bootstrap_b=bootstrap_b, seed=seed)


def fitted_as(metric: str) -> str:
    """What a law of `metric` fits (analysis.runs.error_like): the loss itself, or the error."""
    return "loss" if metric in LOSS_METRICS else "1 - metric/100"


def joint_metric(df: pd.DataFrame) -> str | None:
    """The loss the joint law is fitted on: the held-out loss, or (older runs) the last batch's."""
    return next((m for m in LOSS_METRICS if m in available_metrics(df)), None)


def fitted(fits: list[dict]) -> list[dict]:
    """The entries that hold a law (an entry without one still has its points drawn)."""
    return [f for f in fits if f.get("fit") is not None]


def fit_ours(df: pd.DataFrame, form: str = "auto", bootstrap_b: int = 1000, seed: int = 0) -> list[dict]:
    """Every (curve, metric) with at least two sizes -> {"source": "ours", "axis", "curve", "metric",
    "fitted", "fit", "points"}; points: one row per size with the metric's mean, std and count; "fit" is
    None when the law could not be fitted (the warning says why). `df` needs the columns of AXES."""
    out = []
    for axis, curves in scaling_curves(df, AXES["data"], AXES["model"]).items():
        xcol = AXES[axis]
        for name, sub in curves:
            for metric in available_metrics(sub):
                s = sub[sub[metric].notna()]
                if s[xcol].nunique() < 2:
                    continue
                labels = [f"run {r!r}" for r in s["run_name"]] if "run_name" in s else None
                res = _fit(form, (s[xcol].to_numpy(float), s[metric].to_numpy(float)), metric, labels,
                           bootstrap_b, seed, f"{axis} scaling, {name}, {metric}")
                pts = group_seeds(s, [xcol], [metric]).rename(columns={xcol: "x"})
                out.append({"source": "ours", "axis": axis, "curve": name, "metric": metric, "fit": res,
                            "fitted": fitted_as(metric), "points": pts})
    return out


def fit_paper(paper: pd.DataFrame, form: str = "auto", bootstrap_b: int = 1000, seed: int = 0,
              data_axis: str = "data_size") -> list[dict]:
    """The same laws fitted on the paper's scaling points (read off its figures), each at the paper's own
    x (`x_value`, what `x_source` says it is: its figure's axis or labels), whatever convention places
    our runs: moving them would misquote the paper. Points the paper did not measure (dashed in its
    figure) are drawn but not fitted. The paper's data-scaling x is unique images: with data_axis
    images_seen it has no place."""
    out = []
    for axis, section in PAPER_SECTIONS.items():
        if axis == "data" and data_axis != "data_size":
            continue
        sec = paper[paper["section"] == section]
        for metric, s in sec.groupby("metric", sort=False):
            x = s["x_value"].to_numpy(float)
            keep = np.isfinite(x)
            s, x = s[keep], x[keep]
            measured = (s["status"] == "reported").to_numpy() & s["value"].notna().to_numpy()
            res = None
            if measured.sum() >= 2:
                res = _fit(form, (x[measured], s["value"].to_numpy(float)[measured]), metric,
                           [f"paper {axis} scaling point x={v:g}" for v in x[measured]], bootstrap_b, seed,
                           f"paper's {axis} scaling, {metric}")
            pts = pd.DataFrame({"x": x, f"{metric}_mean": s["value"].to_numpy(float), f"{metric}_std": 0.0,
                                "measured": measured})
            x_source = sorted({str(v) for v in s.get("x_source", pd.Series(dtype=str)).dropna() if str(v)})
            out.append({"source": "paper", "axis": axis, "curve": "paper (read off its figure)", "metric": metric,
                        "fit": res, "fitted": fitted_as(metric), "points": pts, "x_source": "; ".join(x_source)})
    return out


def joint_setting(df: pd.DataFrame) -> tuple[str, pd.DataFrame] | None:
    """The runs of one ablation setting for the joint law: the setting whose runs vary both N and D,
    the most runs first (then the paper's +ARES+MSP); pooling settings would mix different objectives."""
    n, d = AXES["model"], AXES["data"]
    df = df.assign(_setting=ablation_labels(df))
    ok = [(lab, s) for lab, s in df.groupby("_setting", sort=True) if s[n].nunique() >= 2 and s[d].nunique() >= 2]
    if not ok:
        return None
    lab, s = max(ok, key=lambda o: (len(o[1]), o[0].startswith("+ARES+MSP")))
    return lab, s.drop(columns="_setting")


def fit_joint(df: pd.DataFrame, bootstrap_b: int = 1000, seed: int = 0, exclude_top: int = 0,
              x_names: tuple[str, str] = ("param_count", "data_size")) -> dict | None:
    """Chinchilla L(N, D) on the pretraining loss (joint_metric) of the runs of one ablation setting
    (joint_setting) when they vary both N and D (> 5 runs); x_names: what N and D are, for fits.json.
    With `train_flops` logged, the entry also holds the compute-optimal frontier (analysis.frontier)."""
    from analysis.frontier import compute_frontier

    metric = joint_metric(df)
    if metric is None:
        return None
    n, d = AXES["model"], AXES["data"]
    picked = joint_setting(df[df[metric].notna()])
    if picked is None:
        return None
    setting, s = picked
    if len(s) <= LAWS["chinchilla"].n_params:
        return None
    where = f"joint L(N, D) on {metric}, {setting} runs"
    res = _fit_or_warn(where, "chinchilla", s[[n, d]].to_numpy(float),
                       s[metric].to_numpy(float), x_names=x_names, y_name=metric,
                       labels=[f"run {r!r}" for r in s["run_name"]], bootstrap_b=bootstrap_b, seed=seed,
                       exclude_top=exclude_top)
    if res is None:
        return None
    others = sorted(set(ablation_labels(df)) - {setting})
    if others:
        res.warnings.append(f"joint fit on the {len(s)} {setting} runs only; left out: {', '.join(others)}")
        print(f"note: {where}: {res.warnings[-1]}", file=sys.stderr)
    out = {"source": "ours", "axis": "joint", "curve": f"{setting} runs", "metric": metric, "fitted": "loss",
           "fit": res, "setting": setting}
    if "train_flops" in s and s["train_flops"].notna().all():
        runs = pd.DataFrame({"N": s[n].to_numpy(float), "D": s[d].to_numpy(float),
                             "C": s["train_flops"].to_numpy(float), "loss": s[metric].to_numpy(float)})
        out["frontier"] = compute_frontier(runs, res, bootstrap_b, seed)
        for w in out["frontier"]["warnings"]:
            print(f"warning: {where}: {w}", file=sys.stderr)
    return out
