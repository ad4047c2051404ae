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
from analysis.runs import available_metrics, error_like, group_seeds, scaling_curves

AXES = {"data": "data_size", "model": "param_count"}
PAPER_SECTIONS = {"data": "data_scaling", "model": "model_scaling"}


def choose_form(form: str, n_sizes: int) -> str:
    """auto: the saturating law when there are more distinct sizes than its 4 parameters, else power."""
    if form != "auto":
        return form
    return "saturating" if n_sizes > LAWS["saturating"].n_params else "power"


def _fit(form, x, metric, labels, bootstrap_b, seed):
    y = error_like(metric, x[1])
    return fit_scaling(choose_form(form, len(np.unique(x[0]))), x[0][:, None], y, x_names=("x",), y_name=metric,
                       labels=labels, bootstrap_b=bootstrap_b, seed=seed)


def fit_ours(df: pd.DataFrame, form: str = "auto", bootstrap_b: int = 1000, seed: int = 0) -> list[dict]:
    """Every (curve, metric) with at least two sizes -> {"source": "ours", "axis", "curve", "metric",
    "fitted", "fit", "points"}; points: one row per size with the metric's mean, std and count."""
    out = []
    for axis, curves in scaling_curves(df).items():
        xcol = AXES[axis]
        for name, sub in curves:
            for metric in available_metrics(sub):
                s = sub[sub[metric].notna()]
                if s[xcol].nunique() < 2:
                    continue
                labels = [f"run {r!r}" for r in s["run_name"]] if "run_name" in s else None
                try:
                    res = _fit(form, (s[xcol].to_numpy(float), s[metric].to_numpy(float)), metric, labels,
                               bootstrap_b, seed)
                except FitInputError as err:
                    print(f"warning: {axis} scaling, {name}, {metric}: not fitted: {err}", file=sys.stderr)
                    continue
                pts = group_seeds(s, [xcol], [metric]).rename(columns={xcol: "x"})
                out.append({"source": "ours", "axis": axis, "curve": name, "metric": metric, "fit": res,
                            "fitted": "1 - metric/100" if metric != "final_loss" else "loss", "points": pts})
    return out


def fit_paper(paper: pd.DataFrame, form: str = "auto", bootstrap_b: int = 1000, seed: int = 0) -> list[dict]:
    """The same laws fitted on the paper's scaling points (read off its figures); points the paper did
    not measure (dashed in its figure) are drawn but not fitted."""
    out = []
    for axis, section in PAPER_SECTIONS.items():
        sec = paper[paper["section"] == section]
        for metric, s in sec.groupby("metric", sort=False):
            measured = s[s["status"] == "reported"]
            if len(measured) < 2:
                continue
            res = _fit(form, (measured["x_value"].to_numpy(float), measured["value"].to_numpy(float)), metric,
                       [f"paper {axis} scaling point x={x:g}" for x in measured["x_value"]], bootstrap_b, seed)
            pts = pd.DataFrame({"x": s["x_value"].to_numpy(float), f"{metric}_mean": s["value"].to_numpy(float),
                                f"{metric}_std": 0.0, "measured": (s["status"] == "reported").to_numpy()})
            out.append({"source": "paper", "axis": axis, "curve": "paper (read off its figure)", "metric": metric,
                        "fit": res, "fitted": "1 - metric/100" if metric != "final_loss" else "loss", "points": pts})
    return out


def fit_joint(df: pd.DataFrame, bootstrap_b: int = 1000, seed: int = 0, exclude_top: int = 0) -> dict | None:
    """Chinchilla L(N, D) on the pretraining loss when the runs vary both N and D (>= 6 runs)."""
    if "final_loss" not in available_metrics(df):
        return None
    s = df[df["final_loss"].notna()]
    if s["param_count"].nunique() < 2 or s["data_size"].nunique() < 2 or len(s) <= LAWS["chinchilla"].n_params:
        return None
    res = fit_scaling("chinchilla", s[["param_count", "data_size"]].to_numpy(float), s["final_loss"].to_numpy(float),
                      x_names=("param_count", "data_size"), y_name="final_loss",
                      labels=[f"run {r!r}" for r in s["run_name"]], bootstrap_b=bootstrap_b, seed=seed,
                      exclude_top=exclude_top)
    return {"source": "ours", "axis": "joint", "curve": "all runs", "metric": "final_loss", "fitted": "loss", "fit": res}
