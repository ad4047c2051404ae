"""The three functional forms: their objective + analytic gradient, starting grid and parameters.

Each law works on internal, unconstrained parameters `theta` (rows of a (k, P) batch) so that the
optimiser never leaves the valid region, and maps them to the natural parameters of fit.json.
`value_grad(theta, W)` takes per-row point weights W (k, n): a bootstrap resample is a row of
multinomial counts, a leave-one-out fit a row with one zero, so all refits share one batched call.

  power        y = a * x^b                       least squares on log y (closed form)
  saturating3  y = E + A * x^(-b), E >= 0        Kaplan/Hoffmann's one-axis form; least squares on log y
  saturating   y = a * (x + d)^(-b) + c          Zhai et al. 2022 (4 parameters); least squares on log y
  chinchilla  L = E + A / N^alpha + B / D^beta  Hoffmann et al. 2022; Huber(1e-3) on log L, summed
"""
from __future__ import annotations

import itertools

import numpy as np

HUBER_DELTA = 1e-3


def _logsumexp3(z1, z2, z3):
    """log(e^z1 + e^z2 + e^z3) and the three softmax weights, all (k, n)."""
    mx = np.maximum(np.maximum(z1, z2), z3)
    e1, e2, e3 = np.exp(z1 - mx), np.exp(z2 - mx), np.exp(z3 - mx)
    s = e1 + e2 + e3
    return mx + np.log(s), e1 / s, e2 / s, e3 / s


class Law:
    name: str
    param_names: tuple[str, ...]
    x_names: tuple[str, ...]  # the columns of X, in order

    @property
    def n_params(self) -> int:
        return len(self.param_names)

    def prepare(self, X: np.ndarray, y: np.ndarray) -> dict:
        raise NotImplementedError

    def value_grad(self, theta: np.ndarray, W: np.ndarray, data: dict):
        """theta (k, P), W (k, n) -> objective (k,), gradient (k, P)."""
        raise NotImplementedError

    def starts(self, data: dict) -> np.ndarray:
        """The grid of initial theta (S, P)."""
        raise NotImplementedError

    def natural(self, theta: np.ndarray, data: dict) -> np.ndarray:
        """theta (k, P) -> natural parameters (k, P) in `param_names` order."""
        raise NotImplementedError

    def predict(self, params: dict, X: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def size(self, X: np.ndarray) -> np.ndarray:
        """The scalar 'how large' of each point (n,), used to pick the largest points to hold out."""
        return X[:, 0]


class Power(Law):
    name, param_names, x_names = "power", ("a", "b"), ("x",)

    def prepare(self, X, y):
        return {"lx": np.log(X[:, 0]), "ly": np.log(y)}

    def solve(self, W: np.ndarray, data: dict) -> np.ndarray:
        """Weighted least squares of log y on log x for each row of W (k, n) -> theta (k, 2) = (log a, b)."""
        lx, ly = data["lx"], data["ly"]
        sw, sx, sy = W.sum(1), W @ lx, W @ ly
        sxx, sxy = W @ (lx * lx), W @ (lx * ly)
        det = sw * sxx - sx * sx
        with np.errstate(divide="ignore", invalid="ignore"):
            b = (sw * sxy - sx * sy) / det
            la = (sy - b * sx) / sw
        return np.stack([la, b], axis=1)

    def value_grad(self, theta, W, data):
        r = theta[:, :1] + theta[:, 1:2] * data["lx"] - data["ly"]  # (k, n)
        wr = W * r
        return (wr * r).sum(1), np.stack([2 * wr.sum(1), 2 * (wr * data["lx"]).sum(1)], axis=1)

    def starts(self, data):
        return self.solve(np.ones((1, data["lx"].size)), data)

    def natural(self, theta, data):
        return np.stack([np.exp(theta[:, 0]), theta[:, 1]], axis=1)

    def predict(self, params, X):
        return params["a"] * X[:, 0] ** params["b"]


class Saturating3(Law):
    """y = E + A x^(-b) with A, b > 0 and E >= 0 (an irreducible level; E -> 0 is the power law),
    fitted on u = x / x_ref (x_ref: geometric mean of x): theta = log(A'), log(b), log(E) with
    A' = A x_ref^(-b). E = e^theta is positive; a fit at E ~ 0 says the data need no floor."""

    name, param_names, x_names = "saturating3", ("E", "A", "b"), ("x",)

    def prepare(self, X, y):
        x_ref = float(np.exp(np.log(X[:, 0]).mean()))
        return {"lu": np.log(X[:, 0] / x_ref), "x_ref": x_ref, "ly": np.log(y), "y": y}

    def value_grad(self, theta, W, data):
        a, b, e = (np.exp(theta[:, i, None]) for i in range(3))  # (k, 1) each
        t = a * np.exp(-b * data["lu"])  # the power term A' u^-b, (k, n)
        p = t + e
        r = np.log(p) - data["ly"]
        q = 2 * W * r / p  # d objective / d p
        grad = np.stack([(q * t).sum(1), (q * t * (-b * data["lu"])).sum(1), (q * e).sum(1)], axis=1)
        return (W * r * r).sum(1), grad

    def starts(self, data):
        y = data["y"]
        rows = []
        for b, ef in itertools.product((0.05, 0.1, 0.2, 0.5, 1.0, 2.0), (1e-3, 0.3, 0.6, 0.8, 0.9, 0.97)):
            e = ef * y.min()
            a = max(y.mean() - e, 1e-3 * y.mean())  # the power term makes up mean y at u = 1
            rows.append(np.log([a, b, e]))
        return np.array(rows)

    def natural(self, theta, data):
        a, b, e = np.exp(theta).T
        return np.stack([e, a * data["x_ref"] ** b, b], axis=1)

    def predict(self, params, X):
        return params["E"] + params["A"] * X[:, 0] ** (-params["b"])


class Saturating(Law):
    """y = a (x + d)^(-b) + c with a, b, c, d > 0, fitted on u = x / x_ref (x_ref: geometric mean of x)
    so that the starting grid is scale free: theta = log(a'), log(b), log(c), log(d') with
    a' = a x_ref^(-b), d' = d / x_ref."""

    name, param_names, x_names = "saturating", ("a", "b", "c", "d"), ("x",)

    def prepare(self, X, y):
        x_ref = float(np.exp(np.log(X[:, 0]).mean()))
        return {"u": X[:, 0] / x_ref, "x_ref": x_ref, "ly": np.log(y), "y": y}

    def value_grad(self, theta, W, data):
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # far starts overflow: inf, rejected
            return self._value_grad(theta, W, data)

    def _value_grad(self, theta, W, data):
        a, b, c, d = (np.exp(theta[:, i, None]) for i in range(4))  # (k, 1) each
        ud = data["u"] + d  # (k, n)
        log_ud = np.log(ud)
        t = a * np.exp(-b * log_ud)  # the power term a' (u + d')^-b
        p = t + c
        r = np.log(p) - data["ly"]
        q = 2 * W * r / p  # d objective / d p
        grad = np.stack([(q * t).sum(1), (q * t * (-b * log_ud)).sum(1), (q * c).sum(1),
                         (q * t * (-b / ud) * d).sum(1)], axis=1)
        return (W * r * r).sum(1), grad

    def starts(self, data):
        y = data["y"]
        rows = []
        for b, cf, d in itertools.product((0.05, 0.2, 0.5, 1.0, 2.0), (0.01, 0.3, 0.6, 0.9),
                                          (1e-4, 1e-2, 0.3, 1.0)):
            c = cf * y.min()
            a = max(y.mean() - c, 1e-3 * y.mean()) * (1 + d) ** b  # the power term matches mean y at u = 1
            rows.append(np.log([a, b, c, d]))
        return np.array(rows)

    def natural(self, theta, data):
        with np.errstate(over="ignore", invalid="ignore"):
            a, b, c, d = np.exp(theta).T
            x_ref = data["x_ref"]
            return np.stack([a * x_ref ** b, b, c, d * x_ref], axis=1)

    def predict(self, params, X):
        with np.errstate(over="ignore", invalid="ignore"):
            return params["a"] * (X[:, 0] + params["d"]) ** (-params["b"]) + params["c"]


class Chinchilla(Law):
    """log L = LSE(a - alpha log N, b - beta log D, e), theta = (a, b, e, alpha, beta): Hoffmann's
    parametrisation, with A = e^a, B = e^b, E = e^e, and their 4,500-point initialisation grid."""

    name, param_names, x_names = "chinchilla", ("E", "A", "B", "alpha", "beta"), ("N", "D")

    def prepare(self, X, y):
        return {"lN": np.log(X[:, 0]), "lD": np.log(X[:, 1]), "ly": np.log(y)}

    def value_grad(self, theta, W, data):
        a, b, e, al, be = (theta[:, i, None] for i in range(5))
        lN, lD = data["lN"], data["lD"]
        lse, p1, p2, p3 = _logsumexp3(a - al * lN, b - be * lD, np.broadcast_to(e, (theta.shape[0], lN.size)))
        r = lse - data["ly"]  # (k, n) log residuals
        ar = np.abs(r)
        huber = np.where(ar <= HUBER_DELTA, 0.5 * r * r, HUBER_DELTA * (ar - 0.5 * HUBER_DELTA))
        psi = W * np.clip(r, -HUBER_DELTA, HUBER_DELTA)  # weighted Huber derivative
        w1, w2 = psi * p1, psi * p2
        grad = np.stack([w1.sum(1), w2.sum(1), (psi * p3).sum(1), -(w1 * lN).sum(1),
                         -(w2 * lD).sum(1)], axis=1)
        return (W * huber).sum(1), grad

    def starts(self, data):
        grid = itertools.product(np.arange(0, 30, 5.0), np.arange(0, 30, 5.0), np.arange(-1, 1.5, 0.5),
                                 np.arange(0, 2.5, 0.5), np.arange(0, 2.5, 0.5))
        return np.array(list(grid))  # (4500, 5): a, b, e, alpha, beta

    def natural(self, theta, data):
        a, b, e, al, be = theta.T
        return np.stack([np.exp(e), np.exp(a), np.exp(b), al, be], axis=1)

    def predict(self, params, X):
        return params["E"] + params["A"] / X[:, 0] ** params["alpha"] + params["B"] / X[:, 1] ** params["beta"]

    def size(self, X):
        return X[:, 0] * X[:, 1]  # compute ~ 6 N D: hold out the most expensive runs


LAWS: dict[str, Law] = {law.name: law for law in (Power(), Saturating3(), Saturating(), Chinchilla())}
# The forms `--form auto` chooses among, per number of size columns (analysis.selection).
CANDIDATES: dict[int, tuple[str, ...]] = {1: ("power", "saturating3", "saturating"), 2: ("chinchilla",)}
