"""analysis/fit_scaling.py, CSV mode: the exact CLI forms, the fit.json schema, named input errors."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from analysis import fit_scaling  # noqa: E402


@pytest.fixture
def chin_csv(tmp_path):
    rng = np.random.default_rng(0)
    n = 30
    N = np.exp(rng.uniform(np.log(1e6), np.log(1e9), n))
    D = np.exp(rng.uniform(np.log(1e8), np.log(1e11), n))
    L = (1.69 + 406.4 / N ** 0.34 + 410.7 / D ** 0.28) * np.exp(rng.normal(0, 0.005, n))
    path = tmp_path / "runs.csv"
    pd.DataFrame({"run_name": [f"r{i}" for i in range(n)], "params": N, "tokens": D, "loss": L}).to_csv(path, index=False)
    return path


@pytest.fixture
def curve_csv(tmp_path):
    x = np.geomspace(1e3, 1e7, 9)
    err = 0.6 * (x + 200) ** -0.3 + 0.04
    path = tmp_path / "curve.csv"
    pd.DataFrame({"images": x, "err": err * np.exp(np.random.default_rng(1).normal(0, 0.01, x.size))}).to_csv(path, index=False)
    return path


def test_chinchilla_cli_writes_fit_json_with_schema(chin_csv, tmp_path, capsys):
    out = tmp_path / "out"
    fit_scaling.main(["--csv", str(chin_csv), "--form", "chinchilla", "--n", "params", "--d", "tokens", "--y", "loss",
                      "--exclude-top", "2", "--bootstrap", "20", "--seed", "3", "--out", str(out)])
    fit = json.loads((out / "fit.json").read_text())
    assert {"form", "params", "ci95", "n_points", "objective", "loo"} <= set(fit)
    assert fit["form"] == "chinchilla" and fit["n_points"] == 28
    assert list(fit["params"]) == ["E", "A", "B", "alpha", "beta"] and set(fit["ci95"]) == set(fit["params"])
    assert all(len(v) == 2 and v[0] <= fit["params"][k] <= v[1] for k, v in fit["ci95"].items())
    assert fit["objective"] > 0 and fit["loo"]["available"] and fit["holdout"]["k"] == 2
    assert fit["bootstrap"]["B"] == 20 and fit["bootstrap"]["seed"] == 3
    assert abs(fit["params"]["alpha"] - 0.34) < 0.05
    assert "| alpha |" in capsys.readouterr().out


@pytest.mark.parametrize("form, names", [("power", ["a", "b"]), ("saturating", ["a", "b", "c", "d"])])
def test_power_and_saturating_param_names(curve_csv, tmp_path, form, names):
    out = tmp_path / form
    fit_scaling.main(["--csv", str(curve_csv), "--form", form, "--x", "images", "--y", "err", "--bootstrap", "30",
                      "--out", str(out), "--format", "csv"])
    fit = json.loads((out / "fit.json").read_text())
    assert fit["form"] == form and list(fit["params"]) == names and fit["n_points"] == 9
    assert set(fit["ci95"]) == set(names)


def test_script_entry_point_runs_from_the_repo_root(curve_csv, tmp_path):
    out = tmp_path / "script"
    res = subprocess.run([sys.executable, "analysis/fit_scaling.py", "--csv", str(curve_csv), "--form", "power",
                          "--x", "images", "--y", "err", "--bootstrap", "10", "--out", str(out), "--format", "latex"],
                         cwd=REPO, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "\\begin{tabular}" in res.stdout and (out / "fit.json").exists()


def _fails(argv, capsys=None) -> str:
    with pytest.raises(SystemExit) as exc:
        fit_scaling.main(argv)
    return str(exc.value.code)


def test_errors_name_the_column_or_run(chin_csv, curve_csv, tmp_path):
    out = str(tmp_path / "o")
    msg = _fails(["--csv", str(chin_csv), "--form", "chinchilla", "--n", "params", "--d", "tokenz", "--y", "loss", "--out", out])
    assert "missing column(s) ['tokenz']" in msg and "'tokens'" in msg
    df = pd.read_csv(chin_csv)
    df.loc[4, "tokens"] = -1.0
    df.loc[7, "loss"] = np.nan
    bad = tmp_path / "bad.csv"
    df.to_csv(bad, index=False)
    msg = _fails(["--csv", str(bad), "--form", "chinchilla", "--n", "params", "--d", "tokens", "--y", "loss", "--out", out])
    assert "column 'tokens': sizes must be positive, got -1 at run 'r4'" in msg
    df.loc[4, "tokens"] = 1e9
    df.to_csv(bad, index=False)
    msg = _fails(["--csv", str(bad), "--form", "chinchilla", "--n", "params", "--d", "tokens", "--y", "loss", "--out", out])
    assert "column 'loss': missing/NaN value at run 'r7'" in msg
    few = tmp_path / "few.csv"
    pd.read_csv(curve_csv).head(3).to_csv(few, index=False)
    msg = _fails(["--csv", str(few), "--form", "saturating", "--x", "images", "--y", "err", "--out", out])
    assert "4 parameters" in msg and "only 3 points" in msg
    assert "needs --x COL --y COL" in _fails(["--csv", str(few), "--form", "power", "--y", "err", "--out", out])
    assert "no such file" in _fails(["--csv", str(tmp_path / "nope.csv"), "--form", "power", "--x", "a", "--y", "b", "--out", out])
    assert not (tmp_path / "o" / "fit.json").exists()


# Issue 14, defect 5: a malformed CSV is one line naming the file (and column), never a traceback.
@pytest.mark.parametrize("content, expected", [
    (b"images,err\n1000,0.5\n2000,0.4x\n4000,0.3\n", "column 'err': '0.4x' at row 3 (file line) is not a number"),
    (b"images,err\n1000,0.5\nmany,0.4\n", "column 'images': 'many' at row 3 (file line) is not a number"),
    (b"images,err\n1000,0.5\n2000,n/a\n4000,0.3\n", "column 'err': missing/NaN value at row 3 (file line)"),
    (b"images,err\n1000,0.5\n2,000,0.4\n", "not a CSV table"),
    (b"", "the file is empty"),
    (b"images,err\n", "a header but no rows"),
    (b"images,err\n1000,0.5\n2000,\xe9\n", "not UTF-8 text"),
])
def test_malformed_csv_is_one_line_naming_the_file(tmp_path, content, expected):
    bad = tmp_path / "bad.csv"
    bad.write_bytes(content)
    msg = _fails(["--csv", str(bad), "--form", "power", "--x", "images", "--y", "err", "--out", str(tmp_path / "o")])
    assert msg.startswith(f"error: {bad}: ") and expected in msg and "\n" not in msg, msg
    assert not (tmp_path / "o").exists()


def test_malformed_csv_from_the_shell_has_no_traceback(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("images,err\n1000,0.5\n2000,high\n")
    res = subprocess.run([sys.executable, "analysis/fit_scaling.py", "--csv", str(bad), "--form", "power", "--x",
                          "images", "--y", "err", "--out", str(tmp_path / "o")], cwd=REPO, capture_output=True, text=True)
    assert res.returncode != 0 and "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines() == [f"error: {bad}: column 'err': 'high' at row 3 (file line) is not a number"]


# Issue 14, defect 6: four rows of one size are refused (exit != 0), a collapsed CI is warned about.
def test_rows_of_one_size_refused_and_collapsed_ci_warned(tmp_path, capsys):
    one = tmp_path / "one.csv"
    pd.DataFrame({"images": [1000] * 4, "err": [0.5, 0.4, 0.45, 0.41]}).to_csv(one, index=False)
    msg = _fails(["--csv", str(one), "--form", "saturating", "--x", "images", "--y", "err", "--out", str(tmp_path / "o")])
    assert "needs at least 4 distinct sizes of 'images'" in msg and "1 distinct size(s): 1000" in msg
    assert not (tmp_path / "o" / "fit.json").exists()
    two = tmp_path / "two.csv"
    pd.DataFrame({"images": [1000, 100000], "err": [0.5, 0.3]}).to_csv(two, index=False)
    fit_scaling.main(["--csv", str(two), "--form", "power", "--x", "images", "--y", "err", "--bootstrap", "100",
                      "--out", str(tmp_path / "p")])
    err = capsys.readouterr().err
    assert f"warning: {two}: bootstrap: the 95% CI of a, b has zero width" in err
    assert any("zero width" in w for w in json.loads((tmp_path / "p" / "fit.json").read_text())["warnings"])
