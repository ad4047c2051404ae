"""Batched L-BFGS in numpy: many independent small problems (starts, bootstrap resamples) at once.

Every row of X is its own optimisation with its own history; one call of `fg` evaluates the
objective and analytic gradient for all rows still running, so the cost per iteration is one
vectorised pass over (rows, points) instead of a Python loop over starts. Rows leave the active
set as they converge or stall, so late iterations only pay for the hard starts.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

# fg(X (k, P), rows (k,) int indices into the batch) -> (f (k,), g (k, P))
ValueGrad = Callable[[np.ndarray, np.ndarray], "tuple[np.ndarray, np.ndarray]"]


def lbfgs_batch(fg: ValueGrad, x0: np.ndarray, max_iter: int = 300, m: int = 8, ftol: float = 1e-13,
                gtol: float = 1e-12, first_step: float = 0.1, max_step: float = 1.0, max_halvings: int = 40):
    """Minimise each row of x0 (K, P) independently. Returns (x (K, P), f (K,), n_iter (K,))."""
    x = np.array(x0, dtype=float, copy=True)
    K, P = x.shape
    rows = np.arange(K)
    f, g = fg(x, rows)
    S = np.zeros((K, m, P))  # circular buffers of steps s and gradient changes y, per row
    Y = np.zeros((K, m, P))
    rho = np.zeros((K, m))  # 1 / (s.y); 0 marks an empty or rejected slot (a no-op in the two-loop)
    gamma = np.zeros(K)  # initial inverse-Hessian scale s.y / y.y of the newest pair; 0: none yet
    n_iter = np.zeros(K, dtype=int)
    active = np.ones(K, dtype=bool)
    active &= np.isfinite(f)
    for it in range(max_iter):
        act = np.flatnonzero(active)
        if act.size == 0:
            break
        ga = g[act]
        # Two-loop recursion over the shared circular order (newest slot first).
        order = [(it - 1 - j) % m for j in range(m)]
        q = -ga
        alph = np.zeros((act.size, m))
        for j in order:
            alph[:, j] = rho[act, j] * np.einsum("kp,kp->k", S[act, j], q)
            q -= alph[:, j, None] * Y[act, j]
        has_hist = gamma[act] > 0
        gnorm = np.linalg.norm(ga, axis=1) + 1e-300
        q = np.where(has_hist[:, None], q * gamma[act, None], -ga / gnorm[:, None] * first_step)
        for j in reversed(order):
            beta = rho[act, j] * np.einsum("kp,kp->k", Y[act, j], q)
            q += (alph[:, j] - beta)[:, None] * S[act, j]
        dnorm = np.linalg.norm(q, axis=1)
        d = q * np.minimum(1.0, max_step / np.maximum(dnorm, 1e-300))[:, None]  # a plateau's tiny curvature
        slope = np.einsum("kp,kp->k", ga, d)
        bad = ~(slope < 0)  # not a descent direction: forget the history, step along -g
        if bad.any():
            rho[act[bad]] = 0.0
            gamma[act[bad]] = 0.0
            d[bad] = -ga[bad] / gnorm[bad, None] * first_step
            slope[bad] = np.einsum("kp,kp->k", ga[bad], d[bad])

        # Backtracking Armijo line search, vectorised over the rows that still need a step.
        t = np.ones(act.size)
        x_new = x[act] + d
        f_new, g_new = fg(x_new, act)
        need = ~(f_new <= f[act] + 1e-4 * t * slope)
        for _ in range(max_halvings):
            if not need.any():
                break
            idx = np.flatnonzero(need)
            t[idx] *= 0.5
            x_try = x[act[idx]] + t[idx, None] * d[idx]
            f_try, g_try = fg(x_try, act[idx])
            x_new[idx], f_new[idx], g_new[idx] = x_try, f_try, g_try
            need[idx] = ~(f_try <= f[act[idx]] + 1e-4 * t[idx] * slope[idx])
        # No acceptable step along a quasi-Newton direction: drop the history and retry steepest
        # descent next iteration; along steepest descent: a (numerical) minimum.
        ok = ~need
        retry = need & has_hist & ~bad
        rho[act[retry]] = 0.0
        gamma[act[retry]] = 0.0
        stalled = need & ~retry
        s = x_new - x[act]
        yv = g_new - g[act]
        sy = np.einsum("kp,kp->k", s, yv)
        yy = np.einsum("kp,kp->k", yv, yv)
        good = ok & (sy > 1e-16 * np.maximum(yy, 1e-300))  # keep the curvature pair only when s.y > 0
        slot = it % m
        S[act, slot] = np.where(good[:, None], s, 0.0)
        Y[act, slot] = np.where(good[:, None], yv, 0.0)
        rho[act, slot] = np.where(good, 1.0 / np.where(good, sy, 1.0), 0.0)
        gamma[act] = np.where(good, sy / np.maximum(yy, 1e-300), gamma[act])

        f_old = f[act]
        upd = act[ok]
        x[upd], f[upd], g[upd] = x_new[ok], f_new[ok], g_new[ok]
        n_iter[act] += 1
        small_df = (f_old - f[act]) <= ftol * np.maximum(np.maximum(np.abs(f_old), np.abs(f[act])), 1e-300)
        small_g = np.abs(g[act]).max(axis=1) <= gtol
        # Stop a row when its gradient vanishes, or its decrease is negligible after an accepted
        # quasi-Newton step (a first steepest-descent step may be tiny and must not end the run;
        # a rejected one is retried along -g).
        done = stalled | small_g | (small_df & has_hist & ok)
        active[act[done]] = False
    return x, f, n_iter
