"""Scaling-law fit speed: the 4,500-start Chinchilla grid fit and 1,000 bootstrap refits.

    python benchmarks/fit.py                         # 250 synthetic (N, D, L) points, B = 1000
    python benchmarks/fit.py --points 250 --bootstrap 1000 --threads 2 --out outputs/bench_fit

Targets (issue 6, 2 cores): grid fit < 20 s, 1,000 bootstrap refits < 60 s. The data follow
Hoffmann et al.'s law (E 1.69, A 406.4, B 410.7, alpha 0.34, beta 0.28) with 1% log-normal noise;
the recovered parameters and their CIs are printed beside the timings so that speed is never
bought with a wrong answer. Wall and CPU (process) seconds are both reported: the machine may be shared.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from roma import atomic


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--points", type=int, default=250)
    p.add_argument("--bootstrap", type=int, default=1000)
    p.add_argument("--noise", type=float, default=0.01)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2, help="BLAS/OpenMP threads (set before numpy loads)")
    p.add_argument("--out", type=Path, default=None, help="write results.json here")
    args = p.parse_args(argv)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, str(args.threads))

    import numpy as np

    from analysis.fits import bootstrap, fit_law
    from analysis.laws import LAWS

    true = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}
    rng = np.random.default_rng(args.seed)
    N = np.exp(rng.uniform(np.log(1e6), np.log(1e9), args.points))
    D = np.exp(rng.uniform(np.log(1e8), np.log(1e11), args.points))
    X = np.c_[N, D]
    L = LAWS["chinchilla"].predict(true, X) * np.exp(rng.normal(0, args.noise, args.points))

    t0, c0 = time.perf_counter(), time.process_time()
    res = fit_law("chinchilla", X, L)
    grid_s, grid_cpu = time.perf_counter() - t0, time.process_time() - c0
    t0, c0 = time.perf_counter(), time.process_time()
    bootstrap(res, X, L, B=args.bootstrap, seed=args.seed)
    boot_s, boot_cpu = time.perf_counter() - t0, time.process_time() - c0

    print(f"{args.points} points, {res.n_starts}-start grid fit: {grid_s:.2f} s wall, {grid_cpu:.2f} s CPU "
          f"(target < 20 s)")
    print(f"{args.bootstrap} bootstrap refits: {boot_s:.2f} s wall, {boot_cpu:.2f} s CPU (target < 60 s); "
          f"failed {res.bootstrap['n_failed']}")
    print(f"{'param':<6}{'true':>9}{'fit':>10}{'95% CI':>24}")
    for k, v in res.params.items():
        lo, hi = res.ci95[k]
        print(f"{k:<6}{true[k]:>9.4g}{v:>10.4g}   [{lo:>8.4g}, {hi:>8.4g}]")
    out = {"points": args.points, "starts": res.n_starts, "bootstrap": args.bootstrap, "threads": args.threads,
           "cpu_count": os.cpu_count(), "grid_fit_s": grid_s, "grid_fit_cpu_s": grid_cpu, "bootstrap_s": boot_s,
           "bootstrap_cpu_s": boot_cpu, "objective": res.objective, "params": res.params, "ci95": res.ci95, "true": true}
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        atomic.write_json(args.out / "results.json", out)
    return out


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, for analysis/
    main()
