"""`analysis/fit_scaling.py SPEC`: the spec's MLflow store found by the launcher's rule, results beside
it; a run table (--csv without --form) gives the same fits and figures as the store."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from analysis import fit_scaling  # noqa: E402


def _spec(tmp_path: Path) -> Path:
    path = tmp_path / "fitdemo.yaml"
    path.write_text(yaml.safe_dump({"base": "micro", "output_root": str(tmp_path / "out"),
                                    "grid": {"data.subset": [312, 625, 1250, 2500]}}))
    return path


def _log_finished(spec: Path) -> Path:
    """Finished runs in the store the spec's launch would write (4 sizes x 2 seeds, a data law)."""
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    from roma.spec import load_spec
    from roma.tracking import tracking_uri

    cfg = load_spec(spec, check_data=False).runs[0]
    client = MlflowClient(tracking_uri=tracking_uri(cfg))
    exp = client.create_experiment(cfg.experiment)
    rng = np.random.default_rng(0)
    for d in (312, 625, 1250, 2500):
        for seed in (0, 1):
            run = client.create_run(exp, run_name=f"roma_micro_tiny-{d}-seed{seed}")
            metrics = {"aid_oa_tr50": 100 * (1 - 0.9 * d ** -0.1) + rng.normal(0, 0.1),
                       "val_loss": 2.0 * d ** -0.05 * np.exp(rng.normal(0, 0.002))}
            client.log_batch(run.info.run_id, metrics=[Metric(k, float(v), 0, 0) for k, v in metrics.items()],
                             params=[Param(k, str(v)) for k, v in {"model.name": "roma_micro_tiny", "param_count": 311096,
                                                                   "data_size": d, "train.seed": seed}.items()])
            client.set_terminated(run.info.run_id, "FINISHED")
    return Path(tracking_uri(cfg)[len("sqlite:///"):])


def test_spec_finds_its_store_and_csv_mode_draws_the_same(tmp_path, capsys):
    spec = _spec(tmp_path)
    with pytest.raises(SystemExit, match="no MLflow store at .*launch it first"):
        fit_scaling.main([str(spec)])
    db = _log_finished(spec)
    res = fit_scaling.main([str(spec), "--bootstrap", "0", "--no-paper"])
    out = db.parent / "analysis"  # beside the store: outputs/<spec>/analysis
    assert f"results in {out}" in capsys.readouterr().err
    assert {"runs.csv", "fits.json", "data_scaling.png"} <= {p.name for p in out.iterdir()}
    assert res["figures"]["data"]
    again = fit_scaling.main(["--spec", str(spec), "--bootstrap", "0", "--no-paper", "--out", str(tmp_path / "o2")])
    assert json.loads((tmp_path / "o2" / "fits.json").read_text()) == json.loads((out / "fits.json").read_text())
    assert len(again["fits"]) == len(res["fits"])

    table = tmp_path / "from_csv"  # the run table alone: the same fits and the same figures
    fit_scaling.main(["--runs", str(out / "runs.csv"), "--bootstrap", "0", "--no-paper", "--out", str(table)])
    assert json.loads((table / "fits.json").read_text()) == json.loads((out / "fits.json").read_text())
    assert {p.name for p in out.glob("*.png")} == {p.name for p in table.glob("*.png")}


def test_one_source_and_spec_options_are_checked(tmp_path, capsys):
    spec = _spec(tmp_path)
    for argv, msg in (([], "one source"), ([str(spec), "--csv", "x.csv"], "one source"),
                      ([str(spec), "--spec", str(spec)], "give the spec once"),
                      (["--csv", "x.csv"], "--out is required"), (["--csv", "x.csv", "--set", "a=1", "--out", "o"],
                                                                  "--set needs a SPEC"),
                      ([str(spec), "--tracking-uri", "sqlite:///x.db"], "drop --tracking-uri")):
        with pytest.raises(SystemExit):
            fit_scaling.main(argv)
        assert msg in capsys.readouterr().err, argv
    with pytest.raises(SystemExit, match="no spec named 'nope'"):
        fit_scaling.main(["nope"])
