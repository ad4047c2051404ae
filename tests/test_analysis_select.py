"""Law selection by evidence (analysis.selection): synthetic laws of known form are told apart by
AICc and the lack-of-fit F-test against the per-seed spread; a wrong form is flagged."""
import math
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from analysis.fits import fit_law, fit_scaling  # noqa: E402
from analysis.selection import aicc, compare_forms, lack_of_fit  # noqa: E402

SIZES = np.array([312.0, 625, 1250, 2500, 5000, 10000])


def design(truth, seeds=3, noise=0.003, seed=0):
    x = np.repeat(SIZES, seeds)[:, None]
    y = truth(x[:, 0]) * np.exp(np.random.default_rng(seed).normal(0, noise, len(x)))
    return x, y


POWER = lambda x: 2.0 * x ** -0.12  # noqa: E731
SATURATING = lambda x: 0.85 + 40.0 * x ** -1.0  # noqa: E731  (the micro study's held-out loss, roughly)


@pytest.mark.parametrize("seed", range(3))
def test_power_data_selects_power_and_passes_lack_of_fit(seed):
    x, y = design(POWER, seed=seed)
    sel = compare_forms(x, y)
    assert sel["chosen"] == "power", sel["why"]
    assert not sel["candidates"]["power"]["lack_of_fit"]["fails"]


@pytest.mark.parametrize("seed", range(3))
def test_saturating_data_selects_saturating3_and_power_fails_lack_of_fit(seed):
    x, y = design(SATURATING, seed=seed)
    sel = compare_forms(x, y)
    assert sel["chosen"] == "saturating3", sel["why"]
    c = sel["candidates"]
    assert c["power"]["lack_of_fit"]["fails"] and c["power"]["lack_of_fit"]["p"] < 1e-4
    assert not c["saturating3"]["lack_of_fit"]["fails"]
    assert c["power"]["aicc"] > c["saturating3"]["aicc"] + 10
    assert c["saturating3"]["params"]["E"] == pytest.approx(0.85, rel=0.01)


def test_forced_wrong_form_is_flagged_and_the_comparison_still_reported():
    x, y = design(SATURATING)
    res = fit_scaling("power", x, y, bootstrap_b=0)
    assert res.form == "power" and res.lack_of_fit["fails"]
    assert res.selection["mode"] == "forced" and res.selection["chosen"] == "saturating3"
    assert set(res.selection["candidates"]) == {"power", "saturating3", "saturating"}
    assert any(w.startswith("lack of fit: the power law") and "saturating3" in w for w in res.warnings), res.warnings
    js = res.to_json()
    assert js["lack_of_fit"]["fails"] and js["selection"]["candidates"]["power"]["aicc"] < 0
    auto = fit_scaling("auto", x, y, bootstrap_b=0)
    assert auto.form == "saturating3" and not auto.lack_of_fit["fails"]
    assert not any(w.startswith("lack of fit") for w in auto.warnings)


def test_lack_of_fit_statistic_by_hand():
    x, y = design(SATURATING, seeds=3)
    res = fit_law("power", x, y)
    lof = lack_of_fit(res, x, y)
    ly, g = np.log(y), np.repeat(np.arange(len(SIZES)), 3)
    means = np.array([ly[g == j].mean() for j in range(len(SIZES))])
    ss_pure = ((ly - means[g]) ** 2).sum()
    rss = ((np.log(res.predict(x)) - ly) ** 2).sum()
    F = ((rss - ss_pure) / (6 - 2)) / (ss_pure / (18 - 6))
    assert lof["df"] == [4, 12] and lof["F"] == pytest.approx(F) and lof["p"] == pytest.approx(stats.f.sf(F, 4, 12))
    single = lack_of_fit(fit_law("power", SIZES[:, None], POWER(SIZES)), SIZES[:, None], POWER(SIZES))
    assert not single["testable"] and "one run per size" in single["reason"]


def test_aicc_formula_and_undefined_cases():
    assert aicc(0.5, 20, 3) == pytest.approx(20 * math.log(0.5 / 20) + 6 + 24 / 16)
    assert aicc(0.5, 4, 3) == math.inf  # n <= k + 1
    # with one run per size and 4 sizes, only power has residual degrees of freedom
    sel = compare_forms(SIZES[:4, None], SATURATING(SIZES[:4]))
    assert sel["chosen"] == "power" and sel["candidates"]["saturating3"]["aicc"] == math.inf


def test_bootstrap_resamples_seeds_within_each_size():
    from analysis.fits import stratified_weights

    x = np.repeat([[1e3], [1e4], [1e5]], [3, 4, 5], axis=0)
    W, design, n = stratified_weights(x, 500, np.random.default_rng(0))
    assert design == "seeds within each size" and n == math.comb(5, 3) * math.comb(7, 4) * math.comb(9, 5)
    g = np.repeat([0, 1, 2], [3, 4, 5])
    for j, size in enumerate((3, 4, 5)):  # every resample keeps each size with its own number of seeds
        assert (W[:, g == j].sum(1) == size).all()
    assert len({tuple(w) for w in W[:, :3]}) == 10  # all C(5, 3) multisets of 3 seeds appear
    few = fit_scaling("power", *design_xy(3), bootstrap_b=100, seed=0)
    assert any("3 seeds per size (fewer than 5)" in w for w in few.warnings)
    enough = fit_scaling("power", *design_xy(5), bootstrap_b=100, seed=0)
    assert not any("fewer than 5" in w for w in enough.warnings) and enough.bootstrap["seeds_per_size"] == [5, 5]


def design_xy(seeds):
    return design(POWER, seeds=seeds)
