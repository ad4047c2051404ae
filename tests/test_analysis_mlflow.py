"""analysis.runs from a real (temporary sqlite) MLflow store, and the MLflow mode of the CLI end to end."""
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from analysis import fit_scaling  # noqa: E402
from analysis.runs import RunTableError, group_seeds, load_mlflow, scaling_curves  # noqa: E402

MODELS = {"roma_micro": 2e6, "roma_tiny": 5e6, "roma_small": 2e7}


def _log(client, exp_id, name, params, metrics, status="FINISHED", tags=None):
    from mlflow.entities import Metric, Param

    run = client.create_run(exp_id, run_name=name, tags=tags or {})
    client.log_batch(run.info.run_id, metrics=[Metric(k, v, 0, 0) for k, v in metrics.items()],
                     params=[Param(k, str(v)) for k, v in params.items()])
    client.set_terminated(run.info.run_id, status)
    return run.info.run_id


def _metrics(n, d, seed):
    rng = np.random.default_rng(seed)
    err = 0.5 * d ** -0.15 + 0.3 * n ** -0.1 + 0.05
    loss = 1.2 + 30 / n ** 0.3 + 40 / d ** 0.3
    return {"aid_oa_tr50": 100 * (1 - err) + rng.normal(0, 0.2), "oscd_f1": 40 + 2 * np.log10(d) + rng.normal(0, 0.2),
            "final_loss": loss * np.exp(rng.normal(0, 0.003))}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """An sqlite store: a data sweep (roma_tiny, 4 sizes x 2 seeds), a model sweep (3 models at 64K),
    a failed run (ignored) and a separate ablation experiment (3 settings x 2 seeds)."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("scaling")
    for model, n in MODELS.items():
        sizes = (1000, 4000, 16000, 64000) if model == "roma_tiny" else (64000,)
        for d in sizes:
            for seed in (0, 1):
                seen = {"images_seen": 10 * d}  # 10 epochs; logged as a param by some runs, a metric by others
                _log(client, exp, f"{model}-{d}-seed{seed}",
                     {"model.name": model, "param_count": int(n), "data.subset": d, "data_size": d, "train.seed": seed,
                      **(seen if seed == 0 else {})},
                     _metrics(n, d, seed + d) | ({} if seed == 0 else seen), tags={"sweep.data.subset": str(d)})
    _log(client, exp, "crashed", {"model.name": "roma_tiny", "param_count": 5e6, "data_size": 999},
         {"aid_oa_tr50": 1.0}, status="FAILED")
    abl = client.create_experiment("ablation")
    for i, (ares, msp) in enumerate(((False, False), (True, False), (True, True))):
        for seed in (0, 1):
            _log(client, abl, f"abl{i}-seed{seed}",
                 {"model.name": "roma_tiny", "param_count": 5e6, "data_size": 64000, "train.seed": seed,
                  "ares.enabled": ares, "msp.enabled": msp, "msp.scales": "[6]", "ares.descriptor": "lbp"},
                 {"aid_oa_tr20": 60 + 2 * i + seed * 0.3, "aid_oa_tr50": 65 + 2 * i + seed * 0.3},
                 tags={"sweep.ares.enabled": str(ares), "sweep.msp.enabled": str(msp)})
    return uri, client


def test_load_finished_runs_group_seeds_and_split_curves(store):
    uri, _ = store
    df = load_mlflow("scaling", uri)
    assert len(df) == 12 and "crashed" not in set(df["run_name"])
    assert set(df["model"]) == set(MODELS) and df["data_size"].max() == 64000
    assert df["final_loss"].notna().all() and df["spacenet_mf1"].isna().all()
    g = group_seeds(df, ["model", "data_size"], ["aid_oa_tr50"])
    assert len(g) == 6 and (g["aid_oa_tr50_n"] == 2).all() and (g["aid_oa_tr50_std"] > 0).all()
    curves = scaling_curves(df)
    assert [name for name, _ in curves["data"]] == ["roma_tiny"]
    assert [name for name, _ in curves["model"]] == ["64K images"]
    assert curves["model"][0][1]["param_count"].nunique() == 3


def test_missing_param_metric_and_experiment_are_named(store):
    uri, client = store
    exp = client.create_experiment("broken")
    _log(client, exp, "no-size", {"model.name": "roma_tiny", "param_count": 5e6}, {"aid_oa_tr50": 80.0})
    with pytest.raises(RunTableError, match=r"run 'no-size' .*'data_size' or 'data.subset' is missing"):
        load_mlflow("broken", uri)
    exp2 = client.create_experiment("holes")
    _log(client, exp2, "a", {"model.name": "m", "param_count": 1e6, "data_size": 10}, {"aid_oa_tr50": 80.0})
    _log(client, exp2, "b", {"model.name": "m", "param_count": 1e6, "data_size": 20}, {"oscd_f1": 50.0})
    with pytest.raises(RunTableError, match=r"metric 'aid_oa_tr50' is missing or NaN in 1 of 2 runs: \['b'\]"):
        load_mlflow("holes", uri)
    assert len(load_mlflow("holes", uri, allow_missing=True)) == 2
    with pytest.raises(RunTableError, match="experiment 'nope' not found"):
        load_mlflow("nope", uri)


def test_cli_mlflow_mode_writes_figures_tables_and_report(store, tmp_path, capsys):
    uri, _ = store
    out = tmp_path / "an"
    fit_scaling.main(["--experiment", "scaling", "--tracking-uri", uri, "--out", str(out), "--bootstrap", "30"])
    report = capsys.readouterr().out
    assert "**fits**" in report and "**ours vs paper (RoMA-B)**" in report and "87.36" in report
    for stem in ("data_scaling", "model_scaling"):
        assert (out / f"{stem}.png").stat().st_size > 1000 and (out / f"{stem}.pdf").exists()
    fits = json.loads((out / "fits.json").read_text())
    ours = {(f["axis"], f["metric"]) for f in fits if f["source"] == "ours"}
    assert {("data", "aid_oa_tr50"), ("data", "final_loss"), ("model", "oscd_f1"), ("joint", "final_loss")} <= ours
    joint = next(f for f in fits if f["axis"] == "joint")
    assert joint["form"] == "chinchilla" and set(joint["params"]) == {"E", "A", "B", "alpha", "beta"}
    paper = [f for f in fits if f["source"] == "paper"]
    assert {f["metric"] for f in paper} == {"aid_oa_tr50", "oscd_f1", "spacenet_mf1"}
    for ext in ("md", "tex", "csv"):
        assert (out / "tables" / f"fits.{ext}").exists() and (out / "tables" / f"ours.{ext}").exists()
    assert (out / "runs.csv").exists()


def test_cli_mlflow_ablation_table_beside_paper(store, tmp_path, capsys):
    uri, _ = store
    out = tmp_path / "abl"
    fit_scaling.main(["--experiment", "ablation", "--tracking-uri", uri, "--out", str(out), "--format", "csv",
                      "--bootstrap", "0", "--no-paper"])
    table = (out / "tables" / "ablation.csv").read_text().splitlines()
    assert table[0].startswith("model,data size,setting,runs,aid_oa_tr20 ours,aid_oa_tr20 std,aid_oa_tr20 paper")
    assert [r.split(",")[2] for r in table[1:]] == ["ARM baseline", "+ARES", "+ARES+MSP"]
    assert table[1].split(",")[6] == "69.59" and table[3].split(",")[6] == "72.69"
    assert (out / "ablation.png").exists() and (out / "ablation.pdf").exists()
    assert "setting,runs" in capsys.readouterr().out


def test_cli_data_axis_param_convention_and_main_table(store, tmp_path, capsys):
    uri, _ = store
    out = tmp_path / "seen"
    res = fit_scaling.main(["--experiment", "scaling", "--tracking-uri", uri, "--out", str(out), "--bootstrap", "0",
                            "--form", "power", "--data-axis", "images_seen"])
    captured = capsys.readouterr()
    runs = pd.read_csv(out / "runs.csv")
    assert (runs["data_x"] == 10 * runs["data_size"]).all() and (runs["param_x"] == runs["param_count"]).all()
    fits = json.loads((out / "fits.json").read_text())
    assert {(f["data_axis"], f["param_convention"]) for f in fits} == {("images_seen", "ours")}
    assert not [f for f in fits if f["source"] == "paper" and f["axis"] == "data"]  # unique images: no place here
    ours_data = next(f for f in res["fits"] if f["axis"] == "data" and f["metric"] == "aid_oa_tr50")
    assert sorted(ours_data["points"]["x"]) == [1e4, 4e4, 16e4, 64e4]
    joint = next(f for f in fits if f["axis"] == "joint")
    assert joint["x"] == ["param_count", "images_seen"]
    assert "note: data scaling: the paper's points are left out" in captured.err
    assert "panels left out" in captured.err and [p.name for p in res["figures"]["data"]] == ["data_scaling.png",
                                                                                           "data_scaling.pdf"]
    main = (out / "tables" / "main.md").read_text()
    assert "| RoMA | Mamba-B | 87.36 |" in main and "| ours (roma_small, 64K images, 2 runs) |" in main
    assert "**main table (the paper's, ours last)**" in captured.out
    # the paper's parameter labels exist for Tiny..Large only: micro runs are refused, naming them
    with pytest.raises(SystemExit, match=r"model\(s\) \['roma_micro'\] have none"):
        fit_scaling.main(["--experiment", "scaling", "--tracking-uri", uri, "--out", str(tmp_path / "p"),
                          "--param-convention", "paper"])
