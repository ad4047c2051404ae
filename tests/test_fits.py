"""analysis.fits / laws / optim: gradients, batched L-BFGS, known laws recovered within their CIs,
the grid beating a single start, LOO / hold-out errors, and named input errors."""
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from analysis.fits import FitInputError, bootstrap, fit_law, fit_scaling, hold_largest_out, leave_one_out  # noqa: E402
from analysis.laws import LAWS  # noqa: E402
from analysis.optim import lbfgs_batch  # noqa: E402

TRUE_CHIN = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}  # Hoffmann et al.'s fit


def chinchilla_data(n=60, noise=0.005, seed=0):
    rng = np.random.default_rng(seed)
    N = np.exp(rng.uniform(np.log(1e6), np.log(1e9), n))
    D = np.exp(rng.uniform(np.log(1e8), np.log(1e11), n))
    L = LAWS["chinchilla"].predict(TRUE_CHIN, np.c_[N, D]) * np.exp(rng.normal(0, noise, n))
    return np.c_[N, D], L


@pytest.mark.parametrize("form", ["power", "saturating", "chinchilla"])
def test_analytic_gradient_matches_finite_differences(form):
    law = LAWS[form]
    rng = np.random.default_rng(1)
    if form == "chinchilla":
        X, y = chinchilla_data(20)
        theta = np.array([[6.0, 6.0, 0.5, 0.3, 0.3], [3.0, 8.0, 0.2, 0.6, 0.2]])
    else:
        X = np.geomspace(1e3, 1e6, 9)[:, None]
        y = 0.3 * X[:, 0] ** -0.2 + 0.05
        theta = law.starts(law.prepare(X, y))[:2] + 0.1
    data = law.prepare(X, y)
    W = rng.uniform(0.5, 2.0, (len(theta), len(y)))  # per-row weights, as in a bootstrap batch
    _, g = law.value_grad(theta, W, data)
    eps = 1e-6
    for j in range(theta.shape[1]):
        e = np.zeros_like(theta)
        e[:, j] = eps
        fd = (law.value_grad(theta + e, W, data)[0] - law.value_grad(theta - e, W, data)[0]) / (2 * eps)
        np.testing.assert_allclose(g[:, j], fd, rtol=1e-4, atol=1e-9)


def test_lbfgs_batch_solves_independent_rosenbrocks():
    shifts = np.array([1.0, 2.0, -1.0])  # row k: minimum at (s_k, s_k^2)

    def fg(x, rows):
        s = shifts[rows]
        u, v = x[:, 0] - s, x[:, 1] - s ** 2
        w = v - (u ** 2 + 2 * s * u)  # = x1 - x0^2
        f = u ** 2 + 100 * w ** 2
        g0 = 2 * u - 200 * w * (2 * u + 2 * s)
        return f, np.stack([g0, 200 * w], axis=1)

    x, f, it = lbfgs_batch(fg, np.zeros((3, 2)), max_iter=2000)
    np.testing.assert_allclose(x, np.c_[shifts, shifts ** 2], atol=1e-4)
    assert (f < 1e-8).all() and (it > 5).all()


def test_power_law_recovered_within_ci_at_nominal_coverage():
    # A 95% CI misses the truth 1 time in 20 by design, so check the coverage over many noisy
    # datasets (the closed-form power fit makes 60 x 300 refits cheap), not one lucky seed.
    rng = np.random.default_rng(0)
    x = np.geomspace(1e4, 1e8, 15)
    hits, widths = [], []
    for rep in range(60):
        y = 3.0 * x ** -0.2 * np.exp(rng.normal(0, 0.03, x.size))
        res = fit_scaling("power", x[:, None], y, bootstrap_b=300, seed=rep)
        hits.append([lo <= t <= hi for (lo, hi), t in zip((res.ci95["a"], res.ci95["b"]), (3.0, -0.2))])
        widths.append(res.ci95["b"][1] - res.ci95["b"][0])
    coverage = np.mean(hits, axis=0)
    assert (coverage >= 0.8).all(), coverage  # percentile CIs undercover a little with 15 points
    assert np.median(widths) < 0.02  # and they are informative, not just wide


def test_saturating_law_recovered_within_ci():
    rng = np.random.default_rng(0)
    x = np.geomspace(1e3, 1e7, 14)
    true = {"a": 2.0, "b": 0.35, "c": 0.08, "d": 500.0}
    y = LAWS["saturating"].predict(true, x[:, None]) * np.exp(rng.normal(0, 0.01, x.size))
    res = fit_scaling("saturating", x[:, None], y, bootstrap_b=150, seed=0)
    for k in ("b", "c"):
        lo, hi = res.ci95[k]
        assert lo <= true[k] <= hi, (k, res.ci95)
    assert abs(res.params["c"] - 0.08) < 0.01
    assert res.loo["available"] and res.loo["mean_abs_rel_err"] < 0.03


@pytest.fixture(scope="module")
def chin60():
    """60 noisy points of Hoffmann's law and their full-grid fit (shared: the grid fit takes seconds)."""
    X, L = chinchilla_data(60, noise=0.005)
    return X, L, fit_law("chinchilla", X, L)


def test_chinchilla_recovered_within_ci(chin60):
    X, L, res = chin60
    assert res.n_starts == 4500
    bootstrap(res, X, L, B=120, seed=0)
    for k, true in TRUE_CHIN.items():
        lo, hi = res.ci95[k]
        assert lo <= true <= hi, (k, res.params[k], res.ci95[k])
    assert abs(res.params["alpha"] - 0.34) < 0.03 and abs(res.params["beta"] - 0.28) < 0.03


def test_grid_finds_global_optimum_where_single_start_does_not(chin60):
    X, L, grid = chin60
    # From (a, b, e, alpha, beta) = (0, 0, 1, 2, 2), a point of the grid itself, both power terms
    # start negligible and their gradients vanish: L-BFGS (and the scipy polish) stay on the plateau.
    single = fit_law("chinchilla", X, L, starts=np.array([[0.0, 0.0, 1.0, 2.0, 2.0]]))
    assert single.objective > 20 * grid.objective
    assert abs(single.params["alpha"] - 0.34) > 0.5  # stuck far from the truth
    assert abs(grid.params["alpha"] - 0.34) < 0.03


def test_bootstrap_is_seeded():
    x = np.geomspace(10, 1e4, 8)
    y = 2 * x ** -0.3 * np.exp(np.random.default_rng(3).normal(0, 0.05, 8))
    a = fit_scaling("power", x[:, None], y, bootstrap_b=50, seed=7)
    b = fit_scaling("power", x[:, None], y, bootstrap_b=50, seed=7)
    c = fit_scaling("power", x[:, None], y, bootstrap_b=50, seed=8)
    assert a.ci95 == b.ci95 and a.ci95 != c.ci95
    assert a.bootstrap == {"B": 50, "seed": 7, "design": "points", "n_distinct_resamples": 6435,  # C(15, 8)
                           "seeds_per_size": [1, 1], "n_failed": 0, "n_degenerate": a.bootstrap["n_degenerate"]}


def test_loo_and_holdout_exact_on_a_noiseless_law_and_large_on_a_wrong_one():
    x = np.geomspace(1e3, 1e7, 8)[:, None]
    y = 5.0 * x[:, 0] ** -0.25
    res = fit_law("power", x, y)
    assert leave_one_out(res, x, y)["max_abs_rel_err"] < 1e-9
    ho, sub = hold_largest_out("power", x, y, k=2)
    assert ho["held_out"] == [6, 7] and ho["max_abs_rel_err"] < 1e-9 and sub.n_points == 6
    # A saturating truth extrapolated with a pure power law: the hold-out error exposes it.
    y_sat = 5.0 * x[:, 0] ** -0.25 + 0.05
    ho_bad, _ = hold_largest_out("power", x, y_sat, k=2)
    assert ho_bad["mean_abs_rel_err"] > 0.05


def test_exclude_top_fits_without_the_largest_compute_points():
    X, L = chinchilla_data(30, noise=0.005, seed=1)
    res = fit_scaling("chinchilla", X, L, bootstrap_b=0, exclude_top=3)
    largest = np.argsort(X[:, 0] * X[:, 1])[-3:]
    assert res.n_points == 27 and sorted(res.holdout["held_out"]) == sorted(largest.tolist())
    assert res.holdout["mean_abs_rel_err"] < 0.05
    assert res.loo["available"] and not res.ci95


def test_loo_unavailable_when_too_few_points():
    x = np.array([[1e3], [1e4], [1e5], [1e6]])
    res = fit_scaling("saturating", x, np.array([0.5, 0.3, 0.2, 0.15]), bootstrap_b=0)
    assert res.loo == {"available": False, "reason": "3 sizes left out of 4 < 4 parameters"}
    assert not res.holdout["available"]
    assert any(w.startswith("hold-largest-out: not possible: 3 distinct sizes left") for w in res.warnings)


@pytest.mark.parametrize("X, y, match", [
    (np.array([[1e3], [0.0], [1e5]]), np.array([1.0, 0.5, 0.3]), r"column 'x': sizes must be positive, got 0 at row 1"),
    (np.array([[1e3], [1e4], [1e5]]), np.array([1.0, np.nan, 0.3]), r"column 'y': missing/NaN value at row 1"),
    (np.array([[1e3], [np.nan], [1e5]]), np.array([1.0, 0.5, 0.3]), r"column 'x': missing/NaN value at row 1"),
    (np.array([[1e3], [1e4], [1e5]]), np.array([1.0, -0.5, 0.3]), r"column 'y'.*positive; got -0.5 at row 1"),
    (np.array([[1e3]]), np.array([1.0]), r"power law has 2 parameters .* only 1 points"),
])
def test_bad_inputs_name_the_column_and_row(X, y, match):
    with pytest.raises(FitInputError, match=match):
        fit_scaling("power", X, y, bootstrap_b=0)


def test_bad_input_names_the_run_label_and_unknown_form():
    with pytest.raises(FitInputError, match=r"column 'data_size'.*at run 'b'"):
        fit_scaling("power", np.array([[1.0], [-2.0], [3.0]]), np.ones(3), x_names=("data_size",),
                    labels=["run 'a'", "run 'b'", "run 'c'"], bootstrap_b=0)
    with pytest.raises(FitInputError, match="unknown form 'cubic'"):
        fit_scaling("cubic", np.ones((3, 1)), np.ones(3))
    with pytest.raises(FitInputError, match="chinchilla law has 5 parameters"):
        fit_scaling("chinchilla", np.ones((4, 2)) * 10, np.ones(4))


def test_benchmark_script_runs_small(tmp_path, capsys):
    from benchmarks import fit as bench

    out = bench.main(["--points", "30", "--bootstrap", "20", "--out", str(tmp_path)])
    assert out["starts"] == 4500 and out["grid_fit_s"] > 0 and set(out["ci95"]) == set(TRUE_CHIN)
    assert (tmp_path / "results.json").exists() and "bootstrap refits" in capsys.readouterr().out


# Issue 14, defect 6: a law needs as many distinct sizes as parameters, not rows; a collapsed CI is flagged.
def test_rows_of_one_size_are_refused_naming_the_sizes():
    x = np.full((4, 1), 1000.0)  # four seeds of one size: four rows, one size
    with pytest.raises(FitInputError, match=r"saturating law has 4 parameters .* at least 4 distinct sizes .*"
                                            r"4 points were given, with 1 distinct size\(s\): 1000$"):
        fit_scaling("saturating", x, np.array([0.5, 0.4, 0.45, 0.41]), bootstrap_b=50)
    x3 = np.array([[1e3], [1e3], [1e4], [1e4], [1e5], [1e5]])  # 6 rows, 3 sizes < 4 parameters
    with pytest.raises(FitInputError, match=r"with 3 distinct size\(s\): 1000, 10000, 100000"):
        fit_scaling("saturating", x3, np.linspace(0.5, 0.2, 6), bootstrap_b=0)
    X = np.c_[np.full(8, 1e6), np.geomspace(1e8, 1e11, 8)]  # one N: A / N^alpha is a constant beside E
    with pytest.raises(FitInputError, match=r"at least 2 distinct values of column 'N'; all 8 points have N = 1e\+06"):
        fit_scaling("chinchilla", X, np.linspace(3.0, 2.0, 8), bootstrap_b=0)


def test_collapsed_bootstrap_ci_is_warned():
    # Two sizes for two parameters: every resample that holds both gives the same line, so the
    # "CI" has zero width; the resamples with one size cannot be fitted and are counted as degenerate.
    res = fit_scaling("power", np.array([[1e3], [1e5]]), np.array([0.5, 0.3]), bootstrap_b=200, seed=0)
    assert res.ci95["b"][0] == pytest.approx(res.ci95["b"][1])
    assert any("CI of a, b has zero width" in w for w in res.warnings), res.warnings
    assert res.bootstrap["n_degenerate"] == res.bootstrap["n_failed"] > 0
    assert res.to_json()["warnings"] == res.warnings
    # Replicates at each size give the bootstrap something to resample: no collapse, no warning.
    x = np.repeat([[1e3], [1e4], [1e5]], 3, axis=0)
    y = 2 * x[:, 0] ** -0.2 * np.exp(np.random.default_rng(0).normal(0, 0.02, 9))
    ok = fit_scaling("power", x, y, bootstrap_b=200, seed=0)
    assert ok.ci95["b"][1] - ok.ci95["b"][0] > 1e-3 and not any("zero width" in w for w in ok.warnings)


def test_degenerate_resamples_and_loo_count_distinct_sizes():
    x = np.repeat([[1e3], [1e5]], 3, axis=0)  # 2 sizes x 3 seeds
    y = np.array([0.50, 0.52, 0.49, 0.30, 0.31, 0.29])
    res = fit_scaling("power", x, y, bootstrap_b=300, seed=1)
    # the stratified bootstrap keeps both sizes in every resample: none is degenerate, none fails
    assert res.bootstrap["design"] == "seeds within each size" and res.bootstrap["n_distinct_resamples"] == 100
    assert res.bootstrap["n_degenerate"] == res.bootstrap["n_failed"] == 0
    assert res.loo == {"available": False, "reason": "1 sizes left out of 2 < 2 parameters"}  # leave one size out
    once = np.array([[1e3], [1e3], [1e4], [1e4], [1e5], [1e6]])  # 1e5 and 1e6 measured once
    sat = fit_scaling("saturating", once, np.array([0.5, 0.51, 0.4, 0.41, 0.3, 0.25]), bootstrap_b=0)
    assert sat.loo == {"available": False, "reason": "3 sizes left out of 4 < 4 parameters"}
    assert sat.holdout == {"available": False, "reason": "not possible: 3 distinct sizes left after holding out "
                                                         "the 1 largest, and the 4-parameter saturating law needs 5 "
                                                         "to be tested"}


def test_hold_largest_out_holds_every_seed_of_the_largest_sizes():
    x = np.repeat([[1e3], [1e4], [1e5], [1e6]], 2, axis=0)  # 4 sizes x 2 seeds
    y = 5.0 * x[:, 0] ** -0.25 + 0.05  # saturating truth: a power law fitted below 1e6 misses it there
    ho, sub = hold_largest_out("power", x, y, k=1)
    assert ho["held_out"] == [6, 7] and sub.n_points == 6  # no seed of 1e6 left in the fit
    assert ho["mean_abs_rel_err"] > 0.05
    res = fit_scaling("power", x, y, bootstrap_b=0, exclude_top=1)
    assert res.n_points == 6 and res.holdout["held_out"] == [6, 7]
    with pytest.raises(FitInputError, match="--exclude-top 2: not possible: 2 distinct sizes left"):
        fit_scaling("power", x, y, bootstrap_b=0, exclude_top=2)  # 2 sizes for 2 parameters: no test


def test_bootstrap_progress_goes_to_stderr_not_the_report(capsys, monkeypatch):
    """fit_scaling.py prints its report on stdout: a redirected report must hold no progress lines."""
    monkeypatch.setenv("ROMA_PROGRESS", "plain")
    x = np.repeat([100.0, 200.0, 400.0, 800.0], 3)
    y = 2.0 * x ** -0.3 * np.exp(np.random.default_rng(0).normal(0, 0.01, len(x)))
    bootstrap(fit_law("power", x, y), x, y, B=20)
    out, err = capsys.readouterr()
    assert "bootstrap power" in err and "bootstrap" not in out
