"""One extrapolation check, one error: fits.json, the fits table and the figure carry the same number
(prediction vs observed seed mean); a refit with too few sizes is 'not possible', never an interval."""
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from analysis.figures import scaling_figure  # noqa: E402
from analysis.fits import fit_scaling  # noqa: E402
from analysis.tables import fits_table  # noqa: E402


def curve(sizes, seeds=3):
    x = np.repeat(np.asarray(sizes, float), seeds)[:, None]
    y = 0.85 + 40 * x[:, 0] ** -1.0
    return x, y * np.exp(np.random.default_rng(0).normal(0, 0.01, len(y)))


def entry(res, x, y):
    pts = pd.DataFrame({"x": x[:, 0], "val_loss": y}).groupby("x")["val_loss"].agg(["mean", "std"]).reset_index()
    pts.columns = ["x", "val_loss_mean", "val_loss_std"]
    return {"source": "ours", "axis": "data", "curve": "c", "metric": "val_loss", "fitted": "loss", "fit": res,
            "points": pts}


def test_the_same_holdout_error_in_fits_json_table_and_figure():
    x, y = curve([312, 625, 1250, 2500, 5000])
    res = fit_scaling("power", x, y, bootstrap_b=50, seed=0)
    js = res.to_json()["holdout"]
    held = y[x[:, 0] == 5000].mean()
    expected = abs(js["points"][-1]["predicted"] - held) / held  # against the seed mean, not per seed
    assert js["rel_err"] == pytest.approx(expected) and js["points"][-1]["rel_err"] == pytest.approx(expected)
    per_seed = np.mean(np.abs(js["points"][-1]["predicted"] - y[x[:, 0] == 5000]) / y[x[:, 0] == 5000])
    assert per_seed != pytest.approx(expected)  # the other definition would differ here
    assert fits_table([entry(res, x, y)])["rel. err"].iloc[0] == pytest.approx(expected)
    fig = scaling_figure([entry(res, x, y)], "data", "images")
    labels = [t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()]
    assert any(f"({expected:.2%} off the seed mean)" in s for s in labels), labels


def test_too_few_sizes_left_is_not_possible_not_a_zero_width_interval():
    x, y = curve([312, 1250, 5000])  # 3 sizes: 2 left for the power law's 2 parameters
    res = fit_scaling("power", x, y, bootstrap_b=50, seed=0)
    assert res.holdout["available"] is False and res.holdout["reason"].startswith("not possible: 2 distinct sizes")
    assert "points" not in res.holdout
    assert any(w.startswith("hold-largest-out: not possible") for w in res.warnings)
    row = fits_table([entry(res, x, y)]).iloc[0]
    assert row["predicted [95% CI]"].startswith("not possible") and row["in CI"] == "" and np.isnan(row["rel. err"])
    fig = scaling_figure([entry(res, x, y)], "data", "images")
    labels = [t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()]
    assert any("extrapolation check not possible" in s for s in labels)


def test_a_form_that_fails_lack_of_fit_is_flagged_in_table_and_figure():
    x, y = curve([312, 625, 1250, 2500, 5000])
    y = 0.85 + 40 * x[:, 0] ** -1.0 + np.random.default_rng(1).normal(0, 1e-4, len(y))  # levels off
    forced = fit_scaling("power", x, y, bootstrap_b=0)
    row = fits_table([entry(forced, x, y)]).iloc[0]
    assert row["lack of fit"].endswith(": fails") and row["chosen by"] == "forced (auto: saturating3)"
    fig = scaling_figure([entry(forced, x, y)], "data", "images")
    labels = [t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()]
    assert any("FAILS lack of fit" in s for s in labels)
    auto = fit_scaling("auto", x, y, bootstrap_b=0)
    row = fits_table([entry(auto, x, y)]).iloc[0]
    assert row["form"] == "saturating3" and not row["lack of fit"].endswith("fails")
    assert "saturating3" in row["AICc"] and "power" in row["AICc"]
