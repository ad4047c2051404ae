"""A metric or size logged as inf/-inf (a diverged run) is refused before any fit, naming the run and
the metric; NaN stays 'missing' (--allow-missing may drop it), inf never is."""
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from analysis import fit_scaling  # noqa: E402
from analysis.fits import FitInputError, fit_scaling as fit  # noqa: E402
from analysis.runs import RunTableError, check_metrics  # noqa: E402


def _runs(**bad):
    df = pd.DataFrame({"run_name": [f"tiny-{d}-seed0" for d in (100, 200, 400, 800)], "model": "roma_tiny",
                       "param_count": 5e6, "data_size": [100.0, 200.0, 400.0, 800.0],
                       "val_loss": [1.0, 0.9, 0.85, 0.8], "aid_oa_tr50": [30.0, 32.0, 34.0, 36.0]})
    for col, (i, v) in bad.items():
        df.loc[i, col] = v
    return df


@pytest.mark.parametrize("col,value", [("val_loss", np.inf), ("aid_oa_tr50", -np.inf), ("data_size", np.inf)])
def test_run_table_with_inf_is_refused_naming_run_and_metric(col, value):
    with pytest.raises(RunTableError) as err:
        check_metrics(_runs(**{col: (2, value)}), allow_missing=True)  # not "missing": refused even so
    msg = str(err.value)
    assert "tiny-400-seed0" in msg and repr(col) in msg and "not finite" in msg
    assert "tiny-100-seed0" not in msg  # only the bad run is named


def test_nan_is_missing_not_refused_with_allow_missing(capsys):
    df = check_metrics(_runs(val_loss=(1, np.nan)), allow_missing=True)
    assert np.isnan(df.loc[1, "val_loss"])
    assert "tiny-200-seed0" in capsys.readouterr().err


@pytest.mark.parametrize("value", [np.inf, -np.inf, np.nan])
def test_fit_refuses_nonfinite_y_naming_the_row(value):
    y = np.array([1.0, 0.9, value, 0.8])
    with pytest.raises(FitInputError) as err:
        fit("power", np.array([100.0, 200, 400, 800])[:, None], y, y_name="val_loss",
            labels=[f"run {n!r}" for n in "abcd"], bootstrap_b=0)
    msg = str(err.value)
    assert "'val_loss'" in msg and "run 'c'" in msg
    assert ("NaN" in msg) if np.isnan(value) else ("non-finite value" in msg and "inf" in msg)


def test_cli_csv_with_inf_exits_with_error_naming_the_line(tmp_path):
    path = tmp_path / "pts.csv"
    path.write_text("x,loss\n100,1.0\n200,inf\n400,0.85\n800,0.8\n")
    with pytest.raises(SystemExit) as err:
        fit_scaling.main(["--csv", str(path), "--form", "power", "--x", "x", "--y", "loss", "--bootstrap", "0",
                          "--out", str(tmp_path / "o")])
    msg = str(err.value)
    assert msg.startswith("error:") and "'loss'" in msg and "row 3" in msg and "inf" in msg
    assert not (tmp_path / "o" / "fit.json").exists()


def test_runs_table_with_inf_is_refused_by_the_cli(tmp_path):
    path = tmp_path / "runs.csv"
    _runs(val_loss=(3, np.inf)).to_csv(path, index=False)
    with pytest.raises(SystemExit) as err:
        fit_scaling.main(["--runs", str(path), "--bootstrap", "0", "--no-paper", "--out", str(tmp_path / "o")])
    assert "tiny-800-seed0" in str(err.value) and "'val_loss'" in str(err.value)
    assert not (tmp_path / "o" / "fits.json").exists()
