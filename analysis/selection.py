"""Which law the data support: AICc of every candidate form, a lack-of-fit F-test against the per-seed
(pure-error) spread, and the extrapolation check as the tie-breaker.

    sel = compare_forms(X, y)            {"candidates": {form: {...}}, "chosen": form, "why": ..., "_fits": ...}
    lack_of_fit(res, X, y)               {"testable", "F", "df", "p", "fails", ...}

Both work on the scale the laws are fitted on, log y, with the fit's residuals r_i = log f(x_i) - log y_i:
  AICc = n log(RSS / n) + 2k + 2k(k + 1) / (n - k - 1)    (Gaussian log-residuals, k parameters, n runs)
  F    = (SS_lack / (m - k)) / (SS_pure / (n - m))        m distinct sizes; SS_pure: squared deviations of
                                                          each seed from its size's mean, SS_lack = RSS - SS_pure
A form with F's p-value below LACK_OF_FIT_P misses the size means by more than the seeds scatter: its
parameters (an exponent) describe the form, not the data.
"""
from __future__ import annotations

import math

import numpy as np
from scipy import stats

from analysis.laws import CANDIDATES, LAWS

LACK_OF_FIT_P = 0.05
AICC_TIE = 2.0  # candidates within this of the lowest AICc are not told apart by it (Burnham & Anderson)


def size_groups(X: np.ndarray) -> np.ndarray:
    """The index of each point's distinct size (row of X), (n,)."""
    return np.unique(np.asarray(X, float).reshape(len(X), -1), axis=0, return_inverse=True)[1].ravel()


def log_rss(res, X: np.ndarray, y: np.ndarray) -> float:
    """Residual sum of squares of a fit on log y (the objective of power/saturating; chinchilla is
    fitted with a Huber loss, whose RSS this still is)."""
    pred = res.predict(X)
    if not np.all(np.isfinite(pred)) or np.any(pred <= 0):
        return math.inf
    return float(np.sum((np.log(pred) - np.log(y)) ** 2))


def aicc(rss: float, n: int, k: int) -> float:
    """Corrected Akaike criterion; inf where it is undefined (n <= k + 1: no residual degrees of freedom)."""
    if n - k - 1 <= 0 or not math.isfinite(rss):
        return math.inf
    return n * math.log(max(rss, 1e-300) / n) + 2 * k + 2 * k * (k + 1) / (n - k - 1)


def lack_of_fit(res, X: np.ndarray, y: np.ndarray) -> dict:
    """The lack-of-fit F-test of a fitted law against the spread of the seeds at each size."""
    X = np.asarray(X, float).reshape(len(y), -1)
    ly = np.log(np.asarray(y, float))
    g = size_groups(X)
    n, m, k = len(y), g.max() + 1, LAWS[res.form].n_params
    if n - m <= 0:
        return {"testable": False, "reason": f"one run per size ({m} sizes): no per-seed spread to test against"}
    if m - k <= 0:
        return {"testable": False, "reason": f"{m} distinct sizes for {k} parameters: the law passes through every size"}
    means = np.bincount(g, ly) / np.bincount(g)
    ss_pure = float(np.sum((ly - means[g]) ** 2))
    ss_lack = max(log_rss(res, X, y) - ss_pure, 0.0)
    df_lack, df_pure = int(m - k), int(n - m)
    if ss_pure <= 0:
        return {"testable": False, "reason": "the seeds at every size agree exactly: no pure error"}
    F = (ss_lack / df_lack) / (ss_pure / df_pure)
    p = float(stats.f.sf(F, df_lack, df_pure))
    return {"testable": True, "F": float(F), "df": [df_lack, df_pure], "p": p, "fails": p < LACK_OF_FIT_P,
            "ss_lack": ss_lack, "ss_pure": ss_pure}


def lack_of_fit_text(lof: dict | None) -> str:
    """'F(3,10) = 120, p = 4e-08: fails' / 'F(2,10) = 0.41, p = 0.67' / 'untestable: ...'."""
    if not lof:
        return ""
    if not lof.get("testable"):
        return f"untestable: {lof['reason']}"
    df1, df2 = lof["df"]
    return f"F({df1},{df2}) = {lof['F']:.3g}, p = {lof['p']:.2g}" + (": fails" if lof["fails"] else "")


def candidates_for(X: np.ndarray) -> tuple[str, ...]:
    return CANDIDATES[np.asarray(X).reshape(len(X), -1).shape[1]]


def compare_forms(X: np.ndarray, y: np.ndarray, forms=None, **kw) -> dict:
    """Fit every candidate form (no bootstrap) and rank them.

    Per form: k, AICc (inf when n <= k + 1), its difference to the best, the lack-of-fit test, and the
    extrapolation check's error (refit without the largest size, predicted vs observed seed mean;
    None where fewer than k + 1 sizes are left). `chosen` (the rule of --form auto): among the forms that
    pass lack-of-fit (all fitted forms if none does), those within AICC_TIE of the lowest AICc; of
    these, the ones whose extrapolation check is possible (if any); of these, the fewest parameters
    (then the lowest AICc): evidence first, then the simpler law that can still be tested."""
    from analysis.fits import FitInputError, fit_law, hold_largest_out  # fits imports this module

    X = np.asarray(X, float).reshape(len(y), -1)
    y = np.asarray(y, float)
    out: dict[str, dict] = {}
    fits: dict[str, tuple] = {}  # form -> (fit, hold-out dict, hold-out fit): reused by fits.fit_scaling
    for form in forms or candidates_for(X):
        k = LAWS[form].n_params
        try:
            res = fit_law(form, X, y, **kw)
        except FitInputError as err:
            out[form] = {"k": k, "fitted": False, "reason": str(err)}
            continue
        rss = log_rss(res, X, y)
        ho, sub = hold_largest_out(form, X, y, 1, **kw)
        fits[form] = (res, ho, sub)
        out[form] = {"k": k, "fitted": True, "params": res.params, "rss_log": rss, "aicc": aicc(rss, len(y), k),
                     "lack_of_fit": lack_of_fit(res, X, y), "holdout_rel_err": ho.get("rel_err"),
                     **({} if ho.get("available") else {"holdout_reason": ho.get("reason")})}
    fitted = {f: c for f, c in out.items() if c["fitted"] and math.isfinite(c["aicc"])}
    if not fitted:  # e.g. every form has n <= k + 1: the simplest form that could be fitted at all
        usable = [f for f, c in out.items() if c["fitted"]]
        chosen = min(usable, key=lambda f: out[f]["k"]) if usable else None
        return {"candidates": out, "chosen": chosen, "_fits": fits, "why": "no form has residual degrees of freedom for AICc: "
                "the one with the fewest parameters" if chosen else "no form could be fitted"}
    best_aicc = min(c["aicc"] for c in fitted.values())
    for c in fitted.values():
        c["delta_aicc"] = c["aicc"] - best_aicc
    passing = {f: c for f, c in fitted.items() if not c["lack_of_fit"].get("fails")}
    pool = passing or fitted
    low = min(c["aicc"] for c in pool.values())
    near = [f for f, c in pool.items() if c["aicc"] - low <= AICC_TIE]
    checkable = [f for f in near if pool[f]["holdout_rel_err"] is not None]
    chosen = min(checkable or near, key=lambda f: (pool[f]["k"], pool[f]["aicc"]))
    why = ("lowest AICc" if len(near) == 1 else
           f"fewest parameters among the forms within {AICC_TIE:g} of the lowest AICc ({', '.join(near)})"
           + (", of those whose extrapolation can be checked" if checkable and len(checkable) < len(near) else ""))
    why += (" among the forms that pass lack-of-fit" if passing and len(passing) < len(fitted) else
            "" if passing else " (every form fails lack-of-fit)")
    return {"candidates": out, "chosen": chosen, "why": why, "_fits": fits}
