"""analysis tables, figures and the paper's numbers file."""
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from analysis.figures import growth_exponent, plot_highres  # noqa: E402
from analysis.runs import ablation_labels, error_like, fmt_size, from_error_like, load_paper, parse_size  # noqa: E402
from analysis.tables import ours_vs_paper, render  # noqa: E402


def test_paper_file_holds_the_reported_numbers_with_sources():
    p = load_paper()
    assert p["source"].notna().all() and (p["source"].str.len() > 10).all()
    val = lambda sec, method, metric, x=None: p[(p.section == sec) & (p.method == method) & (p.metric == metric)  # noqa: E731
                                                & ((p.x_value == x) if x is not None else True)]["value"].item()
    assert val("main", "RoMA", "aid_oa_tr50") == 87.36 and val("main", "RoMA", "spacenet_mf1") == 79.50
    assert val("main", "SatMAE++", "oscd_f1") == 53.10
    assert val("ablation", "+ARES+MSP", "aid_oa_tr20") == 72.69 and val("ablation", "ARM baseline", "aid_oa_tr50") == 76.80
    assert val("highres", "roma_base", "peak_mem_mb", 4096) == 66357 and val("highres", "vit_b", "samples_per_s", 1248) == 4.99
    assert (p[(p.section == "highres") & (p.method == "vit_b") & (p.x_value == 2048)]["status"] == "OOM").all()
    assert val("data_scaling", "roma_base", "oscd_f1", 62500) == 46.3
    scaling = p[p.section.str.endswith("scaling")]
    assert (scaling["approx"] == 1).all() and scaling["source"].str.contains("approximate").all()
    not_measured = scaling[scaling["status"] != "reported"]
    assert set(not_measured["x_value"]) == {300e6} and set(not_measured["metric"]) == {"oscd_f1", "spacenet_mf1"}


def test_render_formats():
    df = pd.DataFrame({"name": ["a_b", "c|d"], "value": [1.23456, math.nan], "n": [3, 4]})
    md = render(df, "markdown", caption="T").splitlines()
    assert md[0] == "**T**" and md[2] == "| name | value | n |" and md[3] == "|---|---:|---:|"
    assert md[4] == "| a_b | 1.235 | 3 |" and md[5] == "| c\\|d |  | 4 |"
    tex = render(df, "latex")
    assert "\\begin{tabular}{lrr}" in tex and "a\\_b & 1.235 & 3 \\\\" in tex
    assert render(df, "csv").splitlines()[1] == "a_b,1.23456,3"
    with pytest.raises(ValueError, match="unknown format 'html'"):
        render(df, "html")


def test_sizes_and_error_transform():
    assert parse_size("250K") == 250e3 and parse_size("4M") == 4e6 and parse_size(62500) == 62500.0
    assert math.isnan(parse_size("None"))
    with pytest.raises(ValueError, match="not a size"):
        parse_size("big")
    assert fmt_size(62500) == "62.5K" and fmt_size(86e6) == "86M"
    np.testing.assert_allclose(error_like("aid_oa_tr50", [87.5]), [0.125])
    np.testing.assert_allclose(from_error_like("aid_oa_tr50", error_like("aid_oa_tr50", [61.0])), [61.0])
    assert error_like("final_loss", [2.5])[0] == 2.5


def test_ablation_labels_show_only_varying_options():
    df = pd.DataFrame({"ares.enabled": ["False", "True", "True", "True"], "msp.enabled": ["False", "False", "True", "True"],
                       "ares.descriptor": ["lbp"] * 4, "msp.scales": ["[6]", "[6]", "[6]", "[2, 4]"], "msp.weight": ["0.1"] * 4})
    assert ablation_labels(df) == ["ARM baseline", "+ARES", "+ARES+MSP (scales=[6])", "+ARES+MSP (scales=[2, 4])"]


def test_ours_vs_paper_uses_roma_base_at_its_largest_data_size():
    df = pd.DataFrame({"model": ["roma_base", "roma_base", "roma_base", "roma_tiny"], "param_count": [86e6, 86e6, 86e6, 5e6],
                       "data_size": [4e6, 4e6, 1e6, 4e6], "aid_oa_tr50": [86.0, 87.0, 80.0, 99.0]})
    t = ours_vs_paper(df, load_paper())
    row = t[t["metric"] == "AID OA (TR 50%)"].iloc[0]
    assert row["paper RoMA-B"] == 87.36 and row["ours"] == 86.5 and row["seeds"] == 2
    assert abs(row["ours - paper"] + 0.86) < 1e-9 and row["our config"] == "roma_base, 4M images"


def test_plot_highres_from_the_benchmark_table(tmp_path):
    rows = []
    for res in (256, 512, 1024):
        n = (res / 16) ** 2
        rows.append({"model": "roma_base_uni", "resolution": res, "status": "ok", "peak_mem_mb": 2 * n, "samples_per_s": 1e4 / n})
        rows.append({"model": "vit_b", "resolution": res, "status": "OOM" if res == 1024 else "ok",
                     "peak_mem_mb": n * n if res < 1024 else np.nan, "samples_per_s": 1e6 / n ** 2 if res < 1024 else np.nan})
    paths = plot_highres(pd.DataFrame(rows), tmp_path)
    assert [p.name for p in paths] == ["highres.png", "highres.pdf"] and all(p.stat().st_size > 1000 for p in paths)
    assert abs(growth_exponent([256, 512, 1024], [(r / 16) ** 2 for r in (256, 512, 1024)]) - 1.0) < 1e-9
    with pytest.raises(ValueError, match=r"missing column\(s\) \['samples_per_s'\]"):
        plot_highres(pd.DataFrame(rows).drop(columns="samples_per_s"), tmp_path)


def test_ablation_table_sets_paper_numbers_only_beside_the_papers_setting():
    from analysis.tables import ablation_table

    df = pd.DataFrame({"model": "roma_base", "data_size": 250e3, "ares.enabled": ["True"] * 3 + ["False"], "msp.enabled": ["True"] * 3 + ["False"],
                       "ares.descriptor": ["lbp", "hog", "lbp", "lbp"], "msp.scales": ["[6]"] * 4, "msp.weight": ["0.1"] * 4,
                       "aid_oa_tr20": [70.0, 68.0, 71.0, 60.0], "aid_oa_tr50": [75.0, 73.0, 76.0, 65.0]})
    t = ablation_table(df, load_paper()).set_index("setting")
    assert list(t.index) == ["ARM baseline", "+ARES+MSP (descriptor=hog)", "+ARES+MSP (descriptor=lbp)"]
    assert t.loc["+ARES+MSP (descriptor=lbp)", "aid_oa_tr20 ours"] == 70.5  # two seeds averaged
    assert t.loc["+ARES+MSP (descriptor=lbp)", "aid_oa_tr20 paper"] == 72.69
    assert math.isnan(t.loc["+ARES+MSP (descriptor=hog)", "aid_oa_tr20 paper"])
    assert t.loc["ARM baseline", "aid_oa_tr50 paper"] == 76.80
