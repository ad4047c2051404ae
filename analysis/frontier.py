"""The compute-optimal frontier of a grid of runs (model size N x data size D), as Hoffmann et al. 2022.

    fr = compute_frontier(cells, fit, bootstrap_b, seed)     cells: one row per run, columns N, D, C, loss

- **Envelope** (their approach 1): the seed means of each (N, D) cell against its compute C
  (`train_flops`); the envelope is the cells no cheaper cell beats (lower loss at lower C). The
  allocation exponents are the log-log slopes of N and D along it, N_opt ~ C^a, D_opt ~ C^b, with
  CIs from resampling the seeds within each cell (the envelope is recomputed every time).
- **Fit** (approach 3): from the joint law L = E + A/N^alpha + B/D^beta under C = kappa N D (kappa: the
  runs' median C / (N D)), N_opt = G (C/kappa)^a, D_opt = (C/kappa)^b / G, with a = beta/(alpha + beta),
  b = alpha/(alpha + beta), G = (alpha A / (beta B))^(1/(alpha + beta)); CIs from the joint fit's bootstrap.
Approach 2 (IsoFLOP profiles) needs several model sizes at each of a few fixed compute budgets,
which a grid of N x D does not have; it is not computed.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

MIN_ENVELOPE = 3  # points on the envelope (with 2+ distinct N and D) for a slope with a CI


def cell_means(runs: pd.DataFrame, W: np.ndarray | None = None) -> pd.DataFrame:
    """One row per (N, D): mean C and loss over its runs (weighted by W, a resample's counts)."""
    w = np.ones(len(runs)) if W is None else W
    r = runs.assign(_w=w, _wl=w * runs["loss"].to_numpy(float), _wc=w * runs["C"].to_numpy(float))
    g = r.groupby(["N", "D"], sort=True)[["_w", "_wl", "_wc"]].sum()
    return pd.DataFrame({"N": g.index.get_level_values(0), "D": g.index.get_level_values(1),
                         "C": (g["_wc"] / g["_w"]).to_numpy(), "loss": (g["_wl"] / g["_w"]).to_numpy(),
                         "runs": runs.groupby(["N", "D"], sort=True).size().to_numpy()})


def envelope(cells: pd.DataFrame) -> pd.DataFrame:
    """The cells on the compute-optimal envelope: sorted by C, each with a lower loss than every cheaper one."""
    c = cells.sort_values("C").reset_index(drop=True)
    best, keep = math.inf, []
    for i, loss in enumerate(c["loss"]):
        if loss < best:
            best = loss
            keep.append(i)
    return c.iloc[keep].reset_index(drop=True)


def _slopes(env: pd.DataFrame) -> tuple[float, float] | None:
    if len(env) < MIN_ENVELOPE or env["N"].nunique() < 2 or env["D"].nunique() < 2:
        return None
    lc = np.log(env["C"].to_numpy(float))
    return (float(np.polyfit(lc, np.log(env["N"].to_numpy(float)), 1)[0]),
            float(np.polyfit(lc, np.log(env["D"].to_numpy(float)), 1)[0]))


def _ci(samples: np.ndarray) -> list[float]:
    samples = samples[np.isfinite(samples)]
    return [float(v) for v in np.percentile(samples, [2.5, 97.5])] if len(samples) else [math.nan, math.nan]


def compute_frontier(runs: pd.DataFrame, fit=None, bootstrap_b: int = 1000, seed: int = 0) -> dict:
    """runs: columns N, D, C (compute), loss, one row per run. fit: the joint chinchilla FitResult of
    the same runs (or None). Returns the envelope, both estimates of the allocation exponents with
    95% CIs (or why not), and warnings."""
    from analysis.fits import stratified_weights

    runs = runs.reset_index(drop=True)
    cells = cell_means(runs)
    env = envelope(cells)
    out = {"cells": cells.to_dict("records"), "envelope": env.to_dict("records"), "warnings": []}
    s = _slopes(env)
    if s is None:
        out["envelope_fit"] = {"available": False, "reason": f"{len(env)} cells on the envelope ({env['N'].nunique()} "
                                                             f"N, {env['D'].nunique()} D); a slope with a CI needs "
                                                             f"{MIN_ENVELOPE} with 2+ of each"}
        out["warnings"].append(f"frontier (envelope): {out['envelope_fit']['reason']}")
    else:
        X = runs[["N", "D"]].to_numpy(float)
        rng = np.random.default_rng(seed)
        W, design, _ = stratified_weights(X, bootstrap_b, rng) if bootstrap_b else (np.zeros((0, len(runs))), "", 0)
        boot = np.array([_slopes(envelope(cell_means(runs, w))) or (math.nan, math.nan) for w in W]).reshape(-1, 2)
        out["envelope_fit"] = {"available": True, "a": s[0], "b": s[1], "a_ci95": _ci(boot[:, 0]),
                               "b_ci95": _ci(boot[:, 1]), "n_points": len(env), "B": bootstrap_b,
                               "n_failed": int((~np.isfinite(boot).all(1)).sum()) if len(boot) else 0}
        ef = out["envelope_fit"]
        if len(boot) and ef["a_ci95"][1] - ef["a_ci95"][0] <= 1e-9 * abs(ef["a"]):
            out["warnings"].append("frontier (envelope): the same cells form the envelope in every resample, so its "
                                   "slopes' CIs have zero width: they are set by which (N, D) were run, not measured")
    kappa = float(np.median(runs["C"] / (runs["N"] * runs["D"])))
    out["kappa"] = kappa
    if fit is None:
        out["law_fit"] = {"available": False, "reason": "no joint L(N, D) fit"}
        return out

    def alloc(p):
        al, be, A, B = p["alpha"], p["beta"], p["A"], p["B"]
        if not (al > 0 and be > 0 and A > 0 and B > 0):
            return math.nan, math.nan, math.nan
        return be / (al + be), al / (al + be), (al * A / (be * B)) ** (1 / (al + be))

    a, b, G = alloc(fit.params)
    law = {"available": bool(np.isfinite(a)), "a": a, "b": b, "G": G}
    if not np.isfinite(a):
        law["reason"] = "the fit's exponents are not both positive: no optimum"
    elif fit.samples is not None and len(fit.samples):
        from analysis.laws import LAWS

        names = LAWS["chinchilla"].param_names
        smp = np.array([alloc(dict(zip(names, r)))[:2] for r in fit.samples])
        law["a_ci95"], law["b_ci95"] = _ci(smp[:, 0]), _ci(smp[:, 1])
    out["law_fit"] = law
    return out


def law_optimum(fit, C: np.ndarray, kappa: float, G: float, a: float, b: float):
    """N_opt, D_opt and the law's loss there, along compute C (arrays)."""
    M = np.asarray(C, float) / kappa
    N, D = G * M ** a, M ** b / G
    return N, D, fit.predict(np.c_[N, D])
