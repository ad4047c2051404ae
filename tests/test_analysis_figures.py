"""The paper's scaling figures (one panel per metric, the paper's points where we have no runs), the
main table, and the two axis options (D: unique images or images seen; N: our or the paper's sizes)."""
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from analysis import axes, figures, study  # noqa: E402
from analysis.figures import PAPER_ONLY, PAPER_PANEL, scaling_figure  # noqa: E402
from analysis.runs import load_paper  # noqa: E402
from analysis.tables import main_table  # noqa: E402

SIZES = {"roma_tiny": 5.2e6, "roma_small": 2.0e7, "roma_base": 8.0e7}


def runs(metrics=("aid_oa_tr50", "aid_oa_tr20", "ucm_oa_tr50", "final_loss"), seeds=(0, 1)) -> pd.DataFrame:
    """A data sweep of roma_base (4 sizes) and a model sweep at 4M (3 sizes), each with `seeds`."""
    rng = np.random.default_rng(0)
    rows = []
    for model, n in SIZES.items():
        for d in ((62500, 250000, 1e6, 4e6) if model == "roma_base" else (4e6,)):
            for seed in seeds:
                row = {"run_name": f"{model}-{d:g}-seed{seed}", "model": model, "param_count": n, "data_size": d,
                       "images_seen": 400 * d, "seed": seed}
                err = 0.3 * (d / 1e4) ** -0.2 + 0.2 * (n / 1e6) ** -0.3 + 0.05
                for m in metrics:
                    row[m] = (2.0 + err if m == "final_loss" else 100 * (1 - err)) + rng.normal(0, 0.2)
                rows.append(row)
    df = pd.DataFrame(rows)
    df[study.AXES["data"]] = df["data_size"]
    df[study.AXES["model"]] = df["param_count"]
    return df


def titles(fig) -> list[str]:
    return [ax.get_title() for ax in fig.axes if ax.get_visible()]


def panels(fig) -> list[str]:
    """The visible panels in reading order, as 'ours:<metric>' / 'paper:<metric>' (their gids)."""
    return [ax.get_gid() for ax in fig.axes if ax.get_visible()]


@pytest.fixture(scope="module")
def paper():
    return load_paper()


def test_data_figure_has_a_panel_per_metric_and_the_papers_beside_ours(paper):
    fits = study.fit_ours(runs(), "power", 20, 0) + study.fit_paper(paper, "power", 20, 0)
    fig = scaling_figure(fits, "data", "images")
    assert panels(fig) == ["ours:aid_oa_tr50", "paper:aid_oa_tr50", "ours:aid_oa_tr20", "paper:oscd_f1",
                           "paper:spacenet_mf1", "ours:ucm_oa_tr50", "ours:final_loss"]
    assert titles(fig)[:2] == ["AID OA (TR 50%): ours", f"AID OA (TR 50%): paper\n{PAPER_PANEL}"]
    by_gid = {ax.get_gid(): ax for ax in fig.axes}
    # a paper-only panel holds the paper's 4 points and its fitted law, no point of ours
    oscd = by_gid["paper:oscd_f1"]
    assert oscd.get_title() == f"OSCD F1: paper{PAPER_ONLY}\n{PAPER_PANEL}"
    labels = [t.get_text() for t in oscd.get_legend().get_texts()]
    assert any(lab.startswith("paper (read off") for lab in labels) and not any("ours" in lab for lab in labels)
    assert sorted(oscd.lines[0].get_xdata()) == [62500, 250000, 1e6, 4e6]
    assert "pretraining images (62.5K/250K/1M/4M)" in oscd.get_xlabel()  # the paper's own x, said
    # our AID panel has our curve only, the paper's AID panel the paper's law only
    aid = [t.get_text() for t in by_gid["ours:aid_oa_tr50"].get_legend().get_texts()]
    assert any(lab.startswith("ours roma_base") for lab in aid) and not any(lab.startswith("paper") for lab in aid)
    aid_p = [t.get_text() for t in by_gid["paper:aid_oa_tr50"].get_legend().get_texts()]
    assert any(lab.startswith("paper:") for lab in aid_p) and not any("ours" in lab for lab in aid_p)
    assert "not shown" not in fig._suptitle.get_text()
    # a metric's two panels share a row (the layout pads a cell rather than split them)
    rows = {ax.get_gid(): ax.get_subplotspec().rowspan.start for ax in fig.axes if ax.get_visible()}
    assert rows["ours:aid_oa_tr50"] == rows["paper:aid_oa_tr50"]
    # every legend sits outside its panel (below it): never over a point
    fig.canvas.draw()
    for ax in fig.axes:
        if ax.get_visible() and ax.get_legend():
            assert ax.get_legend().get_window_extent().y1 <= ax.get_window_extent().y0 + 1e-6, ax.get_gid()
    plt.close(fig)


def test_a_pair_never_straddles_a_row():
    fits = [{"metric": m, "source": s} for m, srcs in (("a", "o"), ("b", "o"), ("c", "o"), ("d", "op"), ("e", "p"))
            for s in (("ours",) if srcs == "o" else ("paper",) if srcs == "p" else ("ours", "paper"))]
    cells = figures.panel_layout(fits, ["a", "b", "c", "d", "e"], ncol=4)
    assert cells == [("a", "ours"), ("b", "ours"), ("c", "ours"), None, ("d", "ours"), ("d", "paper"), ("e", "paper")]


def test_no_paper_point_on_our_axes_and_the_paper_panel_is_the_papers_table(paper):
    """Every figure equals its table: our panels hold our seed means (nothing of the paper's), each
    paper panel exactly the paper_results.csv values of its section and metric, at the paper's x."""
    df = runs(metrics=("aid_oa_tr50", "final_loss"), seeds=(0, 1, 2))
    fits = study.fit_ours(df, "power", 0, 0) + study.fit_paper(paper, "power", 0, 0)
    for axis, section in study.PAPER_SECTIONS.items():
        fig = scaling_figure(fits, axis, "x")
        drawn = figures.drawn_points(fig)
        ours_panels = drawn[drawn["panel"].str.startswith("ours:")]
        assert len(ours_panels) and (ours_panels["source"] == "ours").all()  # no paper point on our axes
        assert set(drawn[drawn["panel"].str.startswith("paper:")]["source"]) == {"paper"}
        sec = paper[paper["section"] == section]
        assert {p for p in drawn["panel"] if p.startswith("paper:")} == {f"paper:{m}" for m in sec["metric"]}
        for metric, s in sec.groupby("metric"):
            got = drawn[drawn["panel"] == f"paper:{metric}"].sort_values("x")
            want = s.sort_values("x_value")
            assert got["x"].tolist() == want["x_value"].tolist() and got["y"].tolist() == want["value"].tolist()
        # ours: the seed means of the runs of each curve, as the tables compute them
        col = study.AXES[axis]
        sub = df[df["model"] == "roma_base"] if axis == "data" else df[df["data_size"] == 4e6]
        for metric in ("aid_oa_tr50", "final_loss"):
            got = drawn[drawn["panel"] == f"ours:{metric}"].sort_values("x")
            want = sub.groupby(col)[metric].mean()
            assert got["x"].tolist() == want.index.tolist()
            assert got["y"].to_numpy() == pytest.approx(want.to_numpy(), rel=1e-12)
        plt.close(fig)


def test_metrics_with_neither_runs_nor_paper_points_are_left_out_and_named(paper):
    fits = study.fit_ours(runs(metrics=("aid_oa_tr50",)), "power", 0, 0) + study.fit_paper(paper, "power", 0, 0)
    fig = scaling_figure(fits, "model", "params")
    assert panels(fig) == ["ours:aid_oa_tr50", "paper:aid_oa_tr50", "paper:oscd_f1", "paper:spacenet_mf1"]
    assert "its parameter labels (36M/54M/86M/300M)" in fig.axes[1].get_xlabel()
    assert ("not shown (no curve of ours, not in the paper's figure): AID OA (TR 20%), UCM OA (TR 50%), "
            "last training batch loss") in fig._suptitle.get_text()
    plt.close(fig)
    # without the paper's numbers only our metrics get panels; an axis with no curve of ours, no figure
    ours = study.fit_ours(runs(metrics=("aid_oa_tr50", "oscd_f1")), "power", 0, 0)
    fig = scaling_figure(ours, "data", "images")
    assert titles(fig) == ["AID OA (TR 50%): ours", "OSCD F1: ours"]
    plt.close(fig)
    assert scaling_figure(study.fit_paper(paper, "power", 0, 0), "data", "images") is None


def test_a_curve_that_cannot_be_fitted_keeps_its_points(paper, capsys):
    df = runs(metrics=("aid_oa_tr50",), seeds=(0,))
    df = df[(df["model"] != "roma_base") | (df["data_size"] <= 250000)]  # roma_base at 2 sizes
    fits = study.fit_ours(df, "saturating", 0, 0)  # 4 parameters > 2 sizes: no law
    data = [f for f in fits if f["axis"] == "data"]
    assert len(data) == 1 and data[0]["fit"] is None and len(data[0]["points"]) == 2
    assert "not fitted" in capsys.readouterr().err and study.fitted(fits) == []
    fig = scaling_figure(fits, "data", "images")
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels == ["ours roma_base (not fitted)"]
    plt.close(fig)


def test_param_convention_places_ours_and_the_papers_points(paper):
    df = runs(metrics=("aid_oa_tr50",))
    assert axes.param_x(df, "ours", paper).equals(df["param_count"].astype(float))
    assert set(axes.param_x(df, "paper", paper)) == {36e6, 54e6, 86e6}
    with pytest.raises(axes.AxisError, match=r"model\(s\) \['roma_micro_tiny'\] have none: use --param-convention ours"):
        axes.param_x(df.assign(model="roma_micro_tiny"), "paper", paper)

    # the paper's points stay at the paper's own x (its figure's labels), whatever places our runs
    f = next(f for f in study.fit_paper(paper, "power", 0, 0) if f["axis"] == "model" and f["metric"] == "aid_oa_tr50")
    assert sorted(f["points"]["x"]) == [36e6, 54e6, 86e6, 300e6] and "parameter labels" in f["x_source"]
    d = next(f for f in study.fit_paper(paper, "power", 0, 0) if f["axis"] == "data" and f["metric"] == "aid_oa_tr50")
    assert sorted(d["points"]["x"]) == [62_500, 250_000, 1_000_000, 4_000_000] and "pretraining images" in d["x_source"]
    fig = scaling_figure(study.fit_ours(df, "power", 0, 0) + [f], "model", "params")
    labels = [t.get_text() for ax in fig.axes for t in (ax.get_legend().get_texts() if ax.get_legend() else [])]
    assert "paper (read off, +-0.3; at its own x)" in labels
    plt.close(fig)


def test_data_axis_images_seen(paper):
    df = runs(metrics=("aid_oa_tr50",))
    assert axes.data_x(df, "images_seen").equals(400 * df["data_size"])
    with pytest.raises(axes.AxisError, match=r"--data-axis images_seen: 2 of 12 runs did not log .*'roma_tiny-4e\+06-seed0'"):
        axes.data_x(df.assign(images_seen=np.where(df["model"] == "roma_tiny", np.nan, df["images_seen"])),
                    "images_seen")
    # the paper's data-scaling x is unique images: it has no place on an images-seen axis
    assert {f["axis"] for f in study.fit_paper(paper, "power", 0, 0, data_axis="images_seen")} == {"model"}
    # our fitted law is on the chosen x: 400 x more images seen moves a, never the exponent b
    df[study.AXES["data"]] = axes.data_x(df, "images_seen")
    seen = next(f for f in study.fit_ours(df, "power", 0, 0) if f["axis"] == "data")
    unique = next(f for f in study.fit_ours(runs(metrics=("aid_oa_tr50",)), "power", 0, 0) if f["axis"] == "data")
    assert sorted(seen["points"]["x"]) == [400 * d for d in (62500, 250000, 1e6, 4e6)]
    assert seen["fit"].params["b"] == pytest.approx(unique["fit"].params["b"], rel=1e-9)


def test_main_table_has_the_papers_rows_and_ours_last(paper):
    t = main_table(runs(metrics=("aid_oa_tr50", "aid_oa_tr20")), paper)
    assert list(t["method"][:6]) == ["MAE", "ARM", "SatMAE++", "RVSA", "MA3E", "RoMA"]
    assert list(t.columns) == ["method", "backbone", "AID OA (TR 50%)", "AID OA (TR 20%)", "UCM OA (TR 50%)",
                               "OSCD F1", "SpaceNet mF1"]
    roma = t[t["method"] == "RoMA"].iloc[0]
    assert (roma["AID OA (TR 50%)"], roma["OSCD F1"], roma["AID OA (TR 20%)"]) == ("87.36", "55.63", "-")
    assert t[t["method"] == "MAE"].iloc[0]["SpaceNet mF1"] == "-"
    ours = t.iloc[-1]
    assert ours["method"] == "ours (roma_base, 4M images, 2 runs)" and " +- " in ours["AID OA (TR 50%)"]
    assert ours["UCM OA (TR 50%)"] == "-"
    assert "AID OA (TR 20%)" not in main_table(None, paper).columns
