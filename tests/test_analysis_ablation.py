"""Ablations compare runs of one model and data size: no table row or figure bar pools sizes or models,
and the figure's bars are the table's numbers (read back from the drawn rectangles)."""
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from analysis.figures import ablation_figure  # noqa: E402
from analysis.runs import ablation_labels, load_paper  # noqa: E402
from analysis.tables import ablation_table  # noqa: E402


def mixed_runs(token_loss=True) -> pd.DataFrame:
    """A micro-study-like table: a data sweep and a model sweep (ARES+MSP) beside two ablation cells
    (tiny at 2.5K: three settings; small at 5K: two), 3 seeds each, every group with its own level."""
    rows, rng = [], np.random.default_rng(0)
    def add(model, n, d, ares, msp, level):
        for seed in range(3):
            rows.append({"run_name": f"{model}-{d}-{ares}{msp}-seed{seed}", "model": model, "param_count": n,
                         "data_size": float(d), "seed": seed, "ares.enabled": str(ares), "msp.enabled": str(msp),
                         "msp.scales": "[4]", "ares.descriptor": "lbp", "msp.weight": "0.1",
                         "aid_oa_tr50": level + rng.normal(0, 1), "val_loss": 1 - level / 100 + 0.1 * msp,
                         "val_loss_token": 1 - level / 100 + rng.normal(0, 0.001)})
    for i, d in enumerate((312, 625, 1250, 2500, 5000)):
        add("tiny", 3e5, d, True, True, 30 + 2 * i)
    add("small", 1e6, 5000, True, True, 45)
    add("base", 3e6, 5000, True, True, 50)
    add("tiny", 3e5, 2500, False, False, 20)
    add("tiny", 3e5, 2500, True, False, 25)
    add("small", 1e6, 5000, False, False, 40)
    df = pd.DataFrame(rows)
    return df if token_loss else df.drop(columns="val_loss_token")


def test_no_row_pools_sizes_or_models_and_bars_equal_the_table():
    df = mixed_runs()
    t = ablation_table(df, load_paper())
    assert list(zip(t["model"], t["data size"], t["setting"])) == [
        ("small", "5K", "ARM baseline"), ("small", "5K", "+ARES+MSP"),
        ("tiny", "2.5K", "ARM baseline"), ("tiny", "2.5K", "+ARES"), ("tiny", "2.5K", "+ARES+MSP")]
    assert (t["runs"] == 3).all()  # any pooling of sizes or models would give more
    df["setting"] = ablation_labels(df)
    df["size"] = df["data_size"].map({312: "312", 625: "625", 1250: "1.25K", 2500: "2.5K", 5000: "5K"})
    for _, r in t.iterrows():
        runs = df[(df["model"] == r["model"]) & (df["size"] == r["data size"]) & (df["setting"] == r["setting"])]
        assert len(runs) == 3 and r["aid_oa_tr50 ours"] == pytest.approx(runs["aid_oa_tr50"].mean())
        assert r["val_loss_token ours"] == pytest.approx(runs["val_loss_token"].mean())
    assert t.attrs["warnings"] == [] and "val_loss ours" not in t  # the token loss, not val_loss
    fig, bars = ablation_figure(t)
    ours = bars[bars["source"] == "ours"]
    assert len(ours) == 2 * len(t)  # one bar per row and metric
    for _, b in ours.iterrows():
        row = t[(t["model"] == b["model"]) & (t["data size"] == b["data size"]) & (t["setting"] == b["setting"])]
        assert len(row) == 1 and b["value"] == pytest.approx(row[f"{b['metric']} ours"].iloc[0], rel=1e-12)
    legends = [text.get_text() for ax in fig.axes if ax.get_legend() for text in ax.get_legend().get_texts()]
    assert legends and not any("paper" in s for s in legends)  # no paper bar: no "paper" in any legend


def test_pooled_table_would_fail_the_check():
    """The bug this guards against: grouping by the setting alone pools the 21 ARES+MSP runs."""
    df = mixed_runs()
    pooled = df.assign(setting=ablation_labels(df)).groupby("setting").size()
    assert pooled["+ARES+MSP"] == 21
    t = ablation_table(df, load_paper())
    assert t[t["setting"] == "+ARES+MSP"]["runs"].max() == 3


def test_older_store_falls_back_to_val_loss_with_a_warning():
    t = ablation_table(mixed_runs(token_loss=False), load_paper())
    assert "val_loss ours" in t and "val_loss_token ours" not in t
    assert any("val_loss_token" in w and "MSP block loss" in w for w in t.attrs["warnings"])


def test_paper_bar_and_legend_only_where_the_paper_has_a_number():
    df = mixed_runs()
    df["msp.scales"] = "[6]"  # the paper's options: its ablation rows stand beside ours
    t = ablation_table(df, load_paper())
    assert t["aid_oa_tr50 paper"].notna().any()
    fig, bars = ablation_figure(t)
    paper = bars[bars["source"] == "paper"]
    assert len(paper) == t["aid_oa_tr50 paper"].notna().sum()
    for _, b in paper.iterrows():
        row = t[(t["model"] == b["model"]) & (t["data size"] == b["data size"]) & (t["setting"] == b["setting"])]
        assert b["value"] == pytest.approx(row["aid_oa_tr50 paper"].iloc[0])
    aid_axes = [ax for ax in fig.axes if "AID" in ax.get_ylabel()]
    assert all("paper" in [x.get_text() for x in ax.get_legend().get_texts()] for ax in aid_axes)
    loss_axes = [ax for ax in fig.axes if "token" in ax.get_ylabel()]
    assert loss_axes and not any("paper" in x.get_text() for ax in loss_axes for x in ax.get_legend().get_texts())


def test_cli_runs_table_writes_the_same_ablation_as_its_table(tmp_path):
    """--runs: the whole analysis from a run table; the ablation CSV it writes is the table above."""
    from analysis import fit_scaling

    path = tmp_path / "runs.csv"
    mixed_runs().to_csv(path, index=False)
    out = fit_scaling.main(["--runs", str(path), "--bootstrap", "0", "--no-paper", "--out", str(tmp_path / "o")])
    written = pd.read_csv(tmp_path / "o" / "tables" / "ablation.csv")
    expected = ablation_table(mixed_runs(), load_paper())
    assert written["setting"].tolist() == expected["setting"].tolist()
    np.testing.assert_allclose(written["aid_oa_tr50 ours"], expected["aid_oa_tr50 ours"], rtol=1e-9)
    assert (tmp_path / "o" / "ablation.png").exists() and "ablation" in out["tables"]
    joint = [f for f in out["fits"] if f["axis"] == "joint"]
    assert joint and joint[0]["setting"] == "+ARES+MSP" and joint[0]["fit"].n_points == 21  # one setting only


def test_fixed_steps_runs_are_their_own_setting_in_curves_and_the_joint_fit():
    """The micro study's fixed-steps control (train.steps) shares model, sizes and ablation switches with
    the epoch axis: it must be its own curve and never enter the epoch axis's joint fit."""
    from analysis.runs import scaling_curves
    from analysis.study import joint_setting

    epochs = mixed_runs().assign(**{"train.steps": "None"})
    fixed = epochs[(epochs["model"] == "tiny") & (epochs["ares.enabled"] == "True") & (epochs["msp.enabled"] == "True")]
    fixed = fixed.assign(**{"train.steps": "312", "run_name": fixed["run_name"] + "-fixed_steps"})
    df = pd.concat([epochs, fixed], ignore_index=True)
    labels = ablation_labels(df)
    assert {lab for lab, s in zip(labels, df["train.steps"]) if s == "312"} == {"+ARES+MSP (fixed steps=312)"}
    assert "+ARES+MSP" in labels and all("fixed" not in lab for lab, s in zip(labels, df["train.steps"]) if s == "None")
    data_curves = {name: sub for name, sub in scaling_curves(df)["data"]}
    steps_of = {name: set(sub["train.steps"]) for name, sub in data_curves.items()}
    assert all(len(s) == 1 for s in steps_of.values()), steps_of  # no curve pools the two schedules
    assert {"None", "312"} <= set().union(*steps_of.values())
    setting, runs = joint_setting(df.assign(param_x=df["param_count"], data_x=df["data_size"]))
    assert set(runs["train.steps"]) == {"None"} and "fixed" not in setting
