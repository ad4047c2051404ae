"""Fit a scaling law with honest uncertainty: grid-started L-BFGS, the form chosen by evidence, a
bootstrap that follows the design, lack of fit, leave-one-size-out and hold-largest-out checks.

    res = fit_scaling("auto", X, y, bootstrap_b=1000, seed=0)   # or a named form: "power", "chinchilla", ...
    res.form, res.selection  the chosen form; every candidate's AICc, lack of fit, hold-out error (analysis.selection)
    res.params            {"E": .., "A": .., "b": ..} (saturating3), {"E", "A", "B", "alpha", "beta"} (chinchilla), ...
    res.ci95              {"b": [lo, hi], ...}  percentile bootstrap, seeds resampled within each size
    res.lack_of_fit       the F-test against the per-seed spread
    res.loo, res.holdout  leave-one-size-out / hold-largest-out errors, prediction vs observed seed mean
    res.to_json()         the fit.json dict

X is (n, 1) sizes for the one-axis forms and (n, 2) = (N, D) for chinchilla; y (n,) is the fitted
quantity itself (a loss, or an error such as 1 - accuracy: see analysis.runs.error_like).
"""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import minimize

from analysis.laws import LAWS, Law
from analysis.optim import lbfgs_batch
from roma.progress import Progress

N_OPTIMA = 6  # distinct local optima kept from the grid: the warm starts of bootstrap / LOO refits


class FitInputError(ValueError):
    """Bad input to a fit: the message names the column and the row or run."""


@dataclass
class FitResult:
    form: str
    params: dict[str, float]
    objective: float
    n_points: int
    x_names: tuple[str, ...]
    theta: np.ndarray = field(repr=False)  # internal parameters of the optimum (P,)
    optima: np.ndarray = field(repr=False)  # (k, P) distinct local optima, best first
    n_starts: int = 0
    ci95: dict[str, list[float]] = field(default_factory=dict)
    bootstrap: dict = field(default_factory=dict)
    loo: dict = field(default_factory=dict)
    holdout: dict = field(default_factory=dict)
    samples: np.ndarray | None = field(default=None, repr=False)  # (B, P) bootstrap natural params
    warnings: list[str] = field(default_factory=list)  # why a number of this fit may mislead (CI collapse, ...)
    selection: dict = field(default_factory=dict)  # every candidate form's AICc, lack of fit, ... (analysis.selection)
    lack_of_fit: dict = field(default_factory=dict)  # this form's F-test against the per-seed spread

    def predict(self, X: np.ndarray) -> np.ndarray:
        return LAWS[self.form].predict(self.params, np.asarray(X, float).reshape(len(X), -1))

    def predict_band(self, X: np.ndarray, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
        """Pointwise percentile band of the bootstrap predictions at X (needs bootstrap samples)."""
        if self.samples is None or not len(self.samples):
            raise ValueError("no bootstrap samples: fit with bootstrap > 0 to get a band")
        law = LAWS[self.form]
        X = np.asarray(X, float).reshape(len(X), -1)
        preds = np.array([law.predict(dict(zip(law.param_names, s)), X) for s in self.samples])
        q = 100 * (1 - level) / 2
        return tuple(np.nanpercentile(preds, [q, 100 - q], axis=0))

    def to_json(self) -> dict:
        return {"form": self.form, "params": self.params, "ci95": self.ci95, "n_points": self.n_points,
                "objective": self.objective, "loo": self.loo, "holdout": self.holdout,
                "bootstrap": self.bootstrap, "x": list(self.x_names), "n_starts": self.n_starts,
                "lack_of_fit": self.lack_of_fit, "selection": self.selection, "warnings": self.warnings}


def get_law(form: str) -> Law:
    if form not in LAWS:
        raise FitInputError(f"unknown form {form!r}; choose from {sorted(LAWS)}")
    return LAWS[form]


def check_inputs(form: str, X: np.ndarray, y: np.ndarray, x_names, y_name: str, labels=None) -> Law:
    """Raise FitInputError naming the column and row (or run label) of the first bad value."""
    law = get_law(form)
    labels = list(labels) if labels is not None else [f"row {i}" for i in range(len(y))]
    if X.ndim != 2 or X.shape[1] != len(law.x_names) or X.shape[0] != y.shape[0]:
        raise FitInputError(f"{form} needs X of shape (n, {len(law.x_names)}) and y (n,); got {X.shape}, {y.shape}")
    for j, col in enumerate(x_names):
        for i in np.flatnonzero(~np.isfinite(X[:, j])):
            raise FitInputError(f"column {col!r}: {_nonfinite(X[i, j])} at {labels[i]}")
        for i in np.flatnonzero(X[:, j] <= 0):
            raise FitInputError(f"column {col!r}: sizes must be positive, got {X[i, j]:g} at {labels[i]}")
    for i in np.flatnonzero(~np.isfinite(y)):
        raise FitInputError(f"column {y_name!r}: {_nonfinite(y[i])} at {labels[i]}")
    for i in np.flatnonzero(y <= 0):
        raise FitInputError(f"column {y_name!r}: the {form} law is fitted on log y, so values must be "
                            f"positive; got {y[i]:g} at {labels[i]}")
    sizes = np.unique(X, axis=0)
    if len(sizes) < law.n_params:
        shown = ", ".join(_fmt_size(row) for row in sizes[:10]) + (", ..." if len(sizes) > 10 else "")
        raise FitInputError(f"the {form} law has {law.n_params} parameters {law.param_names} and needs at least "
                            f"{law.n_params} distinct sizes of {_cols(x_names)}, but only {len(y)} points were "
                            f"given, with {len(sizes)} distinct size(s): {shown}")
    for j, col in enumerate(x_names if X.shape[1] > 1 else ()):
        if len(np.unique(X[:, j])) < 2:  # the term in this size is then a constant, inseparable from E
            raise FitInputError(f"the {form} law needs at least 2 distinct values of column {col!r}; "
                                f"all {len(y)} points have {col} = {X[0, j]:g}")
    return law


def _nonfinite(v: float) -> str:
    return "missing/NaN value" if np.isnan(v) else f"non-finite value {v:g} (a diverged run?)"


def _cols(x_names) -> str:
    return repr(x_names[0]) if len(x_names) == 1 else "(" + ", ".join(map(repr, x_names)) + ")"


def _fmt_size(row) -> str:
    return f"{row[0]:g}" if len(row) == 1 else "(" + ", ".join(f"{v:g}" for v in row) + ")"


def n_distinct(X: np.ndarray, W: np.ndarray) -> np.ndarray:
    """Distinct sizes (rows of X (n, k)) carrying weight in each row of W (R, n) -> (R,): a resample or
    leave-one-out fit with fewer distinct sizes than parameters cannot determine the law."""
    ids = np.unique(X, axis=0, return_inverse=True)[1].ravel()
    onehot = np.zeros((len(ids), ids.max() + 1))
    onehot[np.arange(len(ids)), ids] = 1.0
    return (((W > 0).astype(float) @ onehot) > 0).sum(1)


def _minimise(law: Law, data: dict, starts: np.ndarray, W: np.ndarray):
    """The best optimum over `starts` (S, P) for each weight row of W (R, n).

    Returns theta (R, P), f (R,), and every start's end point (R, S, P) with its objective (R, S)."""
    R, S = W.shape[0], starts.shape[0]
    if hasattr(law, "solve"):  # convex with a closed form: one solve per weight row
        with np.errstate(invalid="ignore"):  # a resample of one distinct size has no slope: NaN, counted as failed
            theta = law.solve(W, data)
            f, _ = law.value_grad(theta, W, data)
        return theta, f, theta[:, None], f[:, None]
    x0 = np.tile(starts, (R, 1))  # row r * S + s: weights r, start s
    Wrow = np.repeat(W, S, axis=0) if R > 1 else W  # (R*S, n); one row broadcasts over every start

    def fg(x, rows):
        return law.value_grad(x, Wrow[rows] if R > 1 else Wrow, data)

    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # a start that overflows ends as inf: failed
        x, f, _ = lbfgs_batch(fg, x0)
    f = np.where(np.isfinite(f), f, np.inf).reshape(R, S)
    x = x.reshape(R, S, -1)
    best = f.argmin(1)
    return x[np.arange(R), best], f[np.arange(R), best], x, f


def _polish(law: Law, data: dict, theta: np.ndarray, W: np.ndarray):
    """Tighten one optimum with scipy's L-BFGS-B (analytic gradient, tight tolerances)."""
    def fun(t):
        f, g = law.value_grad(t[None], W, data)
        return float(f[0]), g[0]

    with _one_blas_thread():
        res = minimize(fun, theta, jac=True, method="L-BFGS-B", options={"ftol": 1e-15, "gtol": 1e-14, "maxiter": 5000})
    return res.x, float(res.fun)


def _one_blas_thread():
    """scipy's L-BFGS-B calls BLAS on vectors of 3-5 numbers: with a multi-threaded BLAS on a busy
    machine each iteration waits for its threads (12 ms instead of 0.2 ms measured on 2 shared
    cores). threadpoolctl, where installed, keeps it to one thread; the result is the same."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        import contextlib

        return contextlib.nullcontext()
    return threadpool_limits(1, user_api="blas")


def _distinct(x: np.ndarray, f: np.ndarray, k: int, tol: float = 1e-2) -> np.ndarray:
    """Up to k optima from (S, P) points, best first, pairwise further apart than tol (inf-norm)."""
    kept: list[np.ndarray] = []
    for i in np.argsort(f):
        if not np.isfinite(f[i]):
            break
        if all(np.abs(x[i] - z).max() > tol for z in kept):
            kept.append(x[i])
            if len(kept) == k:
                break
    return np.array(kept)


def fit_law(form: str, X: np.ndarray, y: np.ndarray, starts: np.ndarray | None = None,
            x_names=None, y_name: str = "y", labels=None) -> FitResult:
    """Fit one law from its full starting grid (or the given starts), the best optimum kept and polished."""
    X = np.asarray(X, float).reshape(len(y), -1)
    y = np.asarray(y, float)
    x_names = tuple(x_names or get_law(form).x_names)
    law = check_inputs(form, X, y, x_names, y_name, labels)
    data = law.prepare(X, y)
    starts = law.starts(data) if starts is None else np.atleast_2d(starts)
    W = np.ones((1, len(y)))
    _, _, xs, fs = _minimise(law, data, starts, W)
    optima = _distinct(xs[0], fs[0], N_OPTIMA)
    if len(optima) == 0:
        raise FitInputError(f"{form}: no start reached a finite objective on column {y_name!r}")
    best, best_f = optima[0], np.inf
    for t in optima[:3]:  # polish the few best basins; the grid ranking can be off by rounding
        t, f = _polish(law, data, t, W[0])
        if f < best_f:
            best, best_f = t, f
    nat = law.natural(best[None], data)[0]
    return FitResult(form, dict(zip(law.param_names, map(float, nat))), best_f, len(y), x_names,
                     best, np.vstack([best[None], optima]), len(starts))


def _refit(res: FitResult, law: Law, data: dict, W: np.ndarray) -> np.ndarray:
    """Natural parameters (R, P) of the law refitted under each weight row of W (R, n).

    Small problems restart from the full grid; the 4,500-start chinchilla grid would cost R times
    the main fit, so its refits start from the distinct optima the main fit found (warm starts)."""
    n = W.shape[1]
    grid = law.starts(data)
    starts = grid if len(grid) * n <= 20_000 else res.optima
    theta, f, _, _ = _minimise(law, data, starts, W)
    nat = law.natural(theta, data)
    nat[~np.isfinite(f)] = np.nan
    return nat


def stratified_weights(X: np.ndarray, B: int, rng: np.random.Generator) -> tuple[np.ndarray, str, int]:
    """Resample counts (B, n) that follow the design: at each size, its seeds are drawn with replacement
    (as many as it has), so every resample keeps every size and its number of seeds. Returns the
    weights, the design's name and the number of distinct resamples (the product over sizes of the
    multisets C(2 n_g - 1, n_g)). With one run per size there are no seeds to resample: the points
    themselves are resampled (the design 'points', which drops and doubles sizes)."""
    g = np.unique(X, axis=0, return_inverse=True)[1].ravel()
    counts = np.bincount(g)
    n = len(g)
    if counts.max() < 2:
        W = rng.multinomial(n, np.full(n, 1 / n), size=B).astype(float)
        return W, "points", math.comb(2 * n - 1, n)
    W = np.zeros((B, n))
    for j, c in enumerate(counts):
        idx = np.flatnonzero(g == j)
        W[:, idx] = rng.multinomial(c, np.full(c, 1 / c), size=B)
    return W, "seeds within each size", math.prod(math.comb(2 * int(c) - 1, int(c)) for c in counts)


MIN_SEEDS = 5  # fewer seeds per size than this: the within-size bootstrap has few distinct resamples


def bootstrap(res: FitResult, X: np.ndarray, y: np.ndarray, B: int = 1000, seed: int = 0,
              chunk: int = 250) -> FitResult:
    """Percentile 95% CIs from B refits on resamples that follow the design (stratified_weights:
    the seeds of each size resampled within it; seeded)."""
    law = LAWS[res.form]
    X = np.asarray(X, float).reshape(len(y), -1)
    data = law.prepare(X, np.asarray(y, float))
    rng = np.random.default_rng(seed)
    W, design, n_resamples = stratified_weights(X, B, rng)
    parts = []
    # progress on stderr: stdout carries the report (tables), which a user may redirect to a file
    with Progress(B, f"bootstrap {res.form}", unit="refit", file=sys.stderr) as bar:
        for i in range(0, B, chunk):
            parts.append(_refit(res, law, data, W[i:i + chunk]))
            bar.update(len(W[i:i + chunk]))
    samples = np.vstack(parts)
    ok = np.isfinite(samples).all(1)
    lo, hi = np.percentile(samples[ok], [2.5, 97.5], axis=0) if ok.any() else (np.full(law.n_params, np.nan),) * 2
    res.ci95 = {k: [float(a), float(b)] for k, a, b in zip(law.param_names, lo, hi)}
    res.samples = samples[ok]
    degenerate = int((n_distinct(X, W) < law.n_params).sum())
    seeds = np.bincount(np.unique(X, axis=0, return_inverse=True)[1].ravel())
    res.bootstrap = {"B": B, "seed": seed, "design": design, "n_distinct_resamples": n_resamples,
                     "seeds_per_size": [int(seeds.min()), int(seeds.max())], "n_failed": int((~ok).sum()),
                     "n_degenerate": degenerate}
    res.warnings = [w for w in res.warnings if not w.startswith("bootstrap")] + _bootstrap_warnings(res, X, law)
    return res


COLLAPSE_RTOL = 1e-6  # a CI narrower than this (relative to the parameter) is no CI: resampling moved nothing


def _bootstrap_warnings(res: FitResult, X: np.ndarray, law: Law) -> list[str]:
    """Say when the percentile CIs cannot be trusted: collapsed to a point, or built mostly from
    resamples that could not determine the law."""
    out, b = [], res.bootstrap
    n_sizes = len(np.unique(X, axis=0))
    usable = b["B"] - b["n_failed"]
    if usable == 0:
        return [f"bootstrap: all {b['B']} resamples failed; no CI"]
    lo_seeds, hi_seeds = b["seeds_per_size"]
    if b["design"] == "points":
        out.append(f"bootstrap: one run per size ({n_sizes} sizes): the points themselves are resampled, which "
                   f"drops and doubles sizes; the CI mixes design and noise")
    elif lo_seeds < MIN_SEEDS:
        out.append(f"bootstrap: {lo_seeds}{'' if lo_seeds == hi_seeds else f'-{hi_seeds}'} seeds per size (fewer "
                   f"than {MIN_SEEDS}): {b['n_distinct_resamples']:,} distinct resamples in all, and a percentile CI "
                   f"from so few seeds per size understates the spread")
    collapsed = [k for k, (lo, hi) in res.ci95.items()
                 if hi - lo <= COLLAPSE_RTOL * max(abs(res.params[k]), abs(lo), abs(hi), 1e-300)]
    if collapsed:
        out.append(f"bootstrap: the 95% CI of {', '.join(collapsed)} has zero width: every usable resample "
                   f"gave the same fit ({len(X)} points at {n_sizes} distinct sizes for {law.n_params} "
                   f"parameters), so it does not measure the uncertainty; add sizes or seeds")
    if b["n_degenerate"] > 0.2 * b["B"]:  # e.g. 3 single-seed sizes for a power law: 11%, no warning
        out.append(f"bootstrap: {b['n_degenerate']} of {b['B']} resamples hold fewer distinct sizes than the "
                   f"{law.n_params} parameters of the {res.form} law ({n_sizes} distinct sizes in all); "
                   f"the CI is unreliable")
    if b["n_failed"] > max(0.1 * b["B"], b["n_degenerate"]):  # failures beyond the undeterminable resamples
        out.append(f"bootstrap: {b['n_failed']} of {b['B']} refits failed; the CI uses the other {usable}")
    return out


def _mean_errors(X: np.ndarray, y: np.ndarray, pred_of_size) -> tuple[dict, list]:
    """The one definition of a prediction error used everywhere (tables, figures, fits.json, docs): at
    each size, |predicted - observed seed mean| / observed seed mean. pred_of_size(index array) ->
    the prediction at that size."""
    g = np.unique(X, axis=0, return_inverse=True)[1].ravel()
    rel, preds = [], []
    for j in range(g.max() + 1):
        idx = np.flatnonzero(g == j)
        observed = float(np.mean(y[idx]))
        pred = float(pred_of_size(j, idx))
        preds.append(pred)
        rel.append(abs(pred - observed) / abs(observed))
    return {"mean_abs_rel_err": float(np.mean(rel)), "max_abs_rel_err": float(np.max(rel)),
            "rel_errs": rel}, preds


def leave_one_out(res: FitResult, X: np.ndarray, y: np.ndarray) -> dict:
    """Refit without each size in turn (all its seeds) and predict its seed mean: the interpolation
    error of the law (leaving out one seed of a size measured by several would test nothing)."""
    law = LAWS[res.form]
    X = np.asarray(X, float).reshape(len(y), -1)
    g = np.unique(X, axis=0, return_inverse=True)[1].ravel()
    m = g.max() + 1
    if m - 1 < law.n_params:
        return {"available": False, "reason": f"{m - 1} sizes left out of {m} < {law.n_params} parameters"}
    W = (g[None, :] != np.arange(m)[:, None]).astype(float)  # row j: every size but j
    data = law.prepare(X, y)
    nat = _refit(res, law, data, W)
    errs, pred = _mean_errors(X, y, lambda j, idx: law.predict(dict(zip(law.param_names, nat[j])), X[idx[:1]])[0])
    return {"available": True, "unit": "size", **errs, "pred": pred}


def split_largest(law: Law, X: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(kept, held-out) point indices when the k largest sizes (law.size: N*D for chinchilla) are held
    out with every seed measured at them: a seed of a held-out size left in the fit would make the
    extrapolation check an interpolation."""
    size = law.size(X)
    held = np.isin(size, np.unique(size)[-k:])
    return np.flatnonzero(~held), np.flatnonzero(held)


def hold_largest_out(form: str, X: np.ndarray, y: np.ndarray, k: int = 1, **kw) -> tuple[dict, FitResult | None]:
    """Fit (full grid, no information from the held-out points) without the points at the k largest
    sizes and predict them: the extrapolation error, which is what a scaling law is used for.

    The refit needs at least parameters + 1 distinct sizes: with exactly as many the law passes
    through every point, its bootstrap cannot move it (a zero-width interval) and the check says
    nothing, so it is reported as not possible. The error is that of the prediction against the
    observed seed mean at each held-out size (`rel_err`: at the largest)."""
    law = LAWS[form]
    X = np.asarray(X, float).reshape(len(y), -1)
    keep, out = split_largest(law, X, k)
    left = len(np.unique(X[keep], axis=0))
    if left < law.n_params + 1:
        reason = (f"not possible: {left} distinct sizes left after holding out the {k} largest, and the "
                  f"{law.n_params}-parameter {form} law needs {law.n_params + 1} to be tested")
        return {"available": False, "reason": reason}, None
    try:
        sub = fit_law(form, X[keep], y[keep], **kw)
    except FitInputError as err:  # e.g. one N left for chinchilla
        return {"available": False, "reason": f"not possible without the {k} largest size(s): {err}"}, None
    Xo, yo = X[out], y[out]
    errs, pred = _mean_errors(Xo, yo, lambda j, idx: sub.predict(Xo[idx[:1]])[0])
    sizes = np.unique(Xo, axis=0)
    largest = int(np.argmax(law.size(sizes)))
    return {"available": True, "k": k, "held_out": out.tolist(), "rel_err": errs["rel_errs"][largest], **errs,
            "pred": pred, "params": sub.params}, sub


def holdout_points(sub: FitResult, law: Law, X: np.ndarray, y: np.ndarray, out: np.ndarray) -> list[dict]:
    """Per held-out size: its seeds' mean (observed), the law's prediction from the fit without it, the
    bootstrap 95% interval of that prediction (when `sub` was bootstrapped), the relative error of the
    prediction against the mean, and whether the mean lies in the interval."""
    size = law.size(X[out])
    rows = []
    for s in np.unique(size):
        idx = out[size == s]
        x0 = X[idx[:1]]
        observed = float(np.mean(y[idx]))
        predicted = float(sub.predict(x0)[0])
        row = {"x": x0[0].tolist() if x0.shape[1] > 1 else float(x0[0, 0]), "n": int(len(idx)),
               "observed": observed, "predicted": predicted, "rel_err": abs(predicted - observed) / abs(observed),
               "pred_ci95": None, "observed_in_ci95": None}
        if sub.samples is not None and len(sub.samples):
            lo, hi = (float(v[0]) for v in sub.predict_band(x0))
            row["pred_ci95"] = [lo, hi]
            row["observed_in_ci95"] = bool(lo <= observed <= hi)
        rows.append(row)
    return rows


def fit_scaling(form: str, X, y, x_names=None, y_name: str = "y", labels=None, bootstrap_b: int = 1000,
                seed: int = 0, exclude_top: int = 0) -> FitResult:
    """The full analysis of one law: the form (chosen by evidence with form 'auto'), fit, bootstrap
    CIs, lack of fit, leave-one-size-out and hold-largest-out errors.

    form 'auto': every candidate of analysis.laws.CANDIDATES for X's columns is fitted and compared
    (analysis.selection.compare_forms: lack-of-fit, AICc, the extrapolation check); a named form is
    forced, and the comparison is still reported (`selection`). A form that fails the lack-of-fit
    test gets a warning. exclude_top K > 0: the law is fitted without the points at the K largest
    sizes (compute N*D for chinchilla; every seed of a size), and `holdout` reports how well it
    predicts them; with K = 0 the fit uses every point and the hold-out check refits once without the
    largest size (bootstrapped like the full fit). `holdout["points"]`: per held-out size, observed
    mean, prediction, its 95% interval, relative error and whether the observation lies in the
    interval (holdout_points). The check needs parameters + 1 distinct sizes left; where it is not
    possible a warning says so."""
    from analysis.selection import compare_forms, lack_of_fit

    X = np.asarray(X, float).reshape(len(y), -1)
    y = np.asarray(y, float)
    forced = form != "auto"
    if forced:
        get_law(form)
    probe = form if forced else {1: "power", 2: "chinchilla"}.get(X.shape[1])
    if probe is None:
        raise FitInputError(f"no law takes {X.shape[1]} size columns")
    x_names = tuple(x_names or get_law(probe).x_names)
    check_inputs(probe, X, y, x_names, y_name, labels)  # named errors on the data before any form is tried
    # a forced form is compared on the points it is fitted on (without the top sizes when asked to be)
    keep0 = split_largest(get_law(probe), X, exclude_top)[0] if exclude_top else np.arange(len(y))
    sel = compare_forms(X[keep0], y[keep0], x_names=x_names, y_name=y_name)
    if not forced:
        if sel["chosen"] is None:
            raise FitInputError(f"no candidate form could be fitted: " + "; ".join(
                f"{f}: {c['reason']}" for f, c in sel["candidates"].items() if not c["fitted"]))
        form = sel["chosen"]
    done = sel.pop("_fits")
    sel = {"mode": "forced" if forced else "auto", **sel}
    law = check_inputs(form, X, y, x_names, y_name, labels)
    kw = {"x_names": x_names, "y_name": y_name}
    if exclude_top:
        holdout, res = hold_largest_out(form, X, y, exclude_top, **kw)
        if res is None:
            raise FitInputError(f"--exclude-top {exclude_top}: {holdout['reason']}")
        keep, held = split_largest(law, X, exclude_top)
        Xf, yf = X[keep], y[keep]
        holdout.pop("params")
    else:
        # the comparison fitted this form on the same points already (no labels: check_inputs passed above)
        res, holdout, sub = done[form] if form in done else (fit_law(form, X, y, **kw, labels=labels),
                                                             *hold_largest_out(form, X, y, 1, **kw))
        holdout = dict(holdout)
        Xf, yf = X, y
        if sub is not None:  # the extrapolation check's own interval: the held-out fit, bootstrapped
            keep, out = split_largest(law, X, 1)
            if bootstrap_b > 0:
                bootstrap(sub, X[keep], y[keep], bootstrap_b, seed)
            holdout["points"] = holdout_points(sub, law, X, y, out)
    res.holdout = holdout
    res.selection = sel
    res.lack_of_fit = lack_of_fit(res, Xf, yf)
    res.loo = leave_one_out(res, Xf, yf)
    if bootstrap_b > 0:
        bootstrap(res, Xf, yf, bootstrap_b, seed)
    if exclude_top:  # the fit is the held-out fit: its own bootstrap gives the prediction intervals
        holdout["points"] = holdout_points(res, law, X, y, held)
    res.warnings += fit_warnings(res) + (degeneracy_warnings(res, float(yf.min())) if form == "chinchilla" else [])
    return res


WIDE = 10.0  # an interval wider than this many times its value says nothing about the value


def degeneracy_warnings(res: FitResult, y_min: float) -> list[str]:
    """Why a joint L(N, D) fit may be degenerate: a parameter at its bound (E at 0, an exponent at 0), an
    exponent's CI that spans 0, an interval wider than WIDE times its value (a parameter's CI, or the
    extrapolation check's prediction interval)."""
    out, p = [], res.params
    if p["E"] < 1e-6 * y_min:
        out.append(f"degenerate: E = {p['E']:.3g} is at its bound 0 (the irreducible loss is not identified)")
    for k in ("alpha", "beta"):
        if p[k] <= 1e-3:
            out.append(f"degenerate: {k} = {p[k]:.3g} is at its bound 0")
        if k in res.ci95 and res.ci95[k][0] <= 0 <= res.ci95[k][1]:
            out.append(f"degenerate: the 95% CI of {k} [{res.ci95[k][0]:.3g}, {res.ci95[k][1]:.3g}] spans 0")
    for k, (lo, hi) in res.ci95.items():
        if hi - lo > WIDE * abs(p[k]):
            out.append(f"degenerate: the 95% CI of {k} [{lo:.3g}, {hi:.3g}] is wider than {WIDE:g}x its value {p[k]:.3g}")
    for pt in (res.holdout or {}).get("points") or []:
        ci = pt.get("pred_ci95")
        if ci and ci[1] - ci[0] > WIDE * abs(pt["predicted"]):
            out.append(f"degenerate: the extrapolation's 95% interval [{ci[0]:.3g}, {ci[1]:.3g}] is wider than "
                       f"{WIDE:g}x the prediction {pt['predicted']:.3g}")
    return out


def fit_warnings(res: FitResult) -> list[str]:
    """Lack of fit and an impossible extrapolation check, said where the fit's numbers are read."""
    from analysis.selection import lack_of_fit_text

    out = []
    if res.lack_of_fit.get("fails"):
        others = [f for f, c in res.selection.get("candidates", {}).items()
                  if f != res.form and c.get("fitted") and c["lack_of_fit"].get("testable")
                  and not c["lack_of_fit"]["fails"]]
        out.append(f"lack of fit: the {res.form} law misses the size means by more than the seeds scatter "
                   f"({lack_of_fit_text(res.lack_of_fit)}); its parameters describe the form, not the data"
                   + (f" ({', '.join(others)} pass{'es' if len(others) == 1 else ''})" if others else ""))
    if not res.holdout.get("available"):
        out.append(f"hold-largest-out: {res.holdout.get('reason', 'not possible')}")
    return out
