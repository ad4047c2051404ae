"""Tables as Markdown, LaTeX or CSV: fitted laws, the paper's main table with ours, ours beside the
paper's numbers, ablations."""
from __future__ import annotations

import io
import math

import pandas as pd

from analysis.fits import FitResult
from analysis.runs import LABELS, PERCENT_METRICS, ablation_labels, fmt_size, group_seeds

FORMATS = ("markdown", "latex", "csv")


def _cell(v, floatfmt: str) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, float):
        return format(v, floatfmt)
    return str(v)


def render(df: pd.DataFrame, fmt: str = "markdown", floatfmt: str = ".4g", caption: str = "") -> str:
    """One table in the given format; numbers with `floatfmt`, NaN as an empty cell."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose from {FORMATS}")
    if fmt == "csv":
        buf = io.StringIO()
        df.to_csv(buf, index=False)
        return buf.getvalue()
    cells = [[_cell(v, floatfmt) for v in row] for row in df.itertuples(index=False)]
    cols = [str(c) for c in df.columns]
    numeric = [pd.api.types.is_numeric_dtype(df[c]) for c in df.columns]
    if fmt == "markdown":
        lines = ([f"**{caption}**", ""] if caption else []) + ["| " + " | ".join(cols) + " |",
                                                               "|" + "|".join("---:" if n else "---" for n in numeric) + "|"]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in cells]
        return "\n".join(lines) + "\n"
    esc = lambda s: "".join("\\" + ch if ch in "&%$#_{}" else ch for ch in s)  # noqa: E731
    lines = ["\\begin{table}[t]", "\\centering"] + ([f"\\caption{{{esc(caption)}}}"] if caption else [])
    lines += ["\\begin{tabular}{" + "".join("r" if n else "l" for n in numeric) + "}", "\\toprule",
              " & ".join(esc(c) for c in cols) + " \\\\", "\\midrule"]
    lines += [" & ".join(esc(c) for c in row) + " \\\\" for row in cells]
    lines += ["\\bottomrule", "\\end{tabular}", "\\end{table}"]
    return "\n".join(lines) + "\n"


def params_table(res: FitResult) -> pd.DataFrame:
    """name, value, 95% CI of one fit."""
    return pd.DataFrame([{"param": k, "value": v, "ci95_lo": res.ci95.get(k, [math.nan] * 2)[0],
                          "ci95_hi": res.ci95.get(k, [math.nan] * 2)[1]} for k, v in res.params.items()])


def params_ci(res: FitResult) -> str:
    """'b=-0.21 [-0.3, -0.15]; a=...' (the CI only when the fit was bootstrapped)."""
    parts = []
    for k, v in res.params.items():
        lo, hi = res.ci95.get(k, [math.nan, math.nan])
        parts.append(f"{k}={v:.4g}" + (f" [{lo:.3g}, {hi:.3g}]" if k in res.ci95 else ""))
    return "; ".join(parts)


def selection_cells(res: FitResult) -> dict:
    """How the form was chosen: forced or auto (and why), every candidate's AICc, and this form's
    lack-of-fit test, flagged 'fails' where the law misses the size means beyond the seed spread."""
    from analysis.selection import lack_of_fit_text

    sel = res.selection or {}
    cands = sel.get("candidates", {})
    aiccs = "; ".join(f"{f} {c['aicc']:.1f}" if c.get("fitted") and math.isfinite(c.get("aicc", math.inf))
                      else f"{f} -" for f, c in cands.items())
    how = ("forced" + (f" (auto: {sel['chosen']})" if sel.get("chosen") and sel["chosen"] != res.form else "")
           if sel.get("mode") == "forced" else "auto: " + sel.get("why", ""))
    return {"form": res.form, "chosen by": how, "AICc": aiccs, "lack of fit": lack_of_fit_text(res.lack_of_fit)}


def fits_table(fits: list[dict]) -> pd.DataFrame:
    """One row per fitted law ({"source", "axis", "curve", "metric", "fitted", "fit": FitResult}, see
    analysis.study): the form and how it was chosen, the parameters with their CIs, lack of fit, the
    leave-one-size-out error and the extrapolation check (all errors: prediction vs seed mean)."""
    rows = []
    for f in fits:
        res: FitResult | None = f["fit"]
        if res is None:  # points drawn, no law (a warning said why)
            continue
        loo = res.loo or {}
        rows.append({"source": f["source"], "axis": f["axis"], "curve": f["curve"],
                     "metric": LABELS.get(f["metric"], f["metric"]), "fitted": f.get("fitted", ""),
                     **selection_cells(res), "n": res.n_points, "params [95% CI]": params_ci(res),
                     "LOO rel. err": loo.get("mean_abs_rel_err", math.nan) if loo.get("available") else math.nan,
                     **extrapolation_cells(res.holdout or {})})
    return pd.DataFrame(rows)


def extrapolation_cells(holdout: dict) -> dict:
    """The hold-largest-out check of one law as table cells: the held-out size, its observed seed mean,
    the prediction of the law fitted without it with the bootstrap 95% interval, the relative error
    of that prediction against the seed mean (the one definition, also in fits.json and the figures)
    and whether the observation lies inside; 'not possible' (why) where the refit has too few sizes."""
    pts = holdout.get("points") or []
    if not holdout.get("available") or not pts:
        return {"held-out x": "", "observed": math.nan, "predicted [95% CI]": holdout.get("reason", ""),
                "rel. err": math.nan, "in CI": ""}
    p = pts[-1]
    ci = f" [{p['pred_ci95'][0]:.4g}, {p['pred_ci95'][1]:.4g}]" if p.get("pred_ci95") else ""
    x = p["x"] if not isinstance(p["x"], list) else math.prod(p["x"])
    return {"held-out x": f"{x:.4g}", "observed": p["observed"], "predicted [95% CI]": f"{p['predicted']:.4g}{ci}",
            "rel. err": p["rel_err"],
            "in CI": "" if p.get("observed_in_ci95") is None else ("yes" if p["observed_in_ci95"] else "no")}


def _best_ours(df: pd.DataFrame) -> pd.DataFrame:
    """The runs to set beside the paper's RoMA-B: roma_base when present, at its largest data size
    (else the largest model), with the ablation switches of the paper (ARES and MSP on)."""
    is_base = df["model"] == "roma_base"
    sub = df[is_base] if is_base.any() else df[df["param_count"] == df["param_count"].max()]
    sub = sub[sub["data_size"] == sub["data_size"].max()]
    full = sub[[lab.startswith("+ARES+MSP") for lab in ablation_labels(sub)]]
    return full if len(full) else sub


def ours_vs_paper(df: pd.DataFrame, paper: pd.DataFrame) -> pd.DataFrame:
    """Per downstream metric: the paper's RoMA-B beside ours (mean +- std over seeds) and the gap."""
    best = _best_ours(df)
    ref = paper[(paper["section"] == "main") & (paper["method"] == "RoMA")].set_index("metric")["value"]
    config = f"{best['model'].iloc[0]}, {fmt_size(best['data_size'].iloc[0])} images" if len(best) else ""
    rows = []
    for k in PERCENT_METRICS:
        vals = best[k].dropna() if k in best else pd.Series(dtype=float)
        p = float(ref.get(k, math.nan))
        if vals.empty and math.isnan(p):
            continue
        mean = float(vals.mean()) if len(vals) else math.nan
        rows.append({"metric": LABELS[k], "paper RoMA-B": p, "ours": mean,
                     "ours std": float(vals.std(ddof=1)) if len(vals) > 1 else math.nan, "seeds": len(vals),
                     "ours - paper": mean - p,
                     "our config": config})
    return pd.DataFrame(rows)


MAIN_METRICS = ("aid_oa_tr50", "ucm_oa_tr50", "oscd_f1", "spacenet_mf1")  # the columns of the paper's main table


def main_table(df: pd.DataFrame | None, paper: pd.DataFrame) -> pd.DataFrame:
    """The paper's main table (every method it lists, "-" where it gives no number) with our best run
    (roma_base at its largest data size, ARES and MSP on; mean +- std over seeds) as the last row.
    AID at TR 20% is a column only when ours has it (the paper's table has none)."""
    main = paper[paper["section"] == "main"]
    metrics = list(MAIN_METRICS)
    best = _best_ours(df) if df is not None and len(df) else None
    if best is not None and "aid_oa_tr20" in best and best["aid_oa_tr20"].notna().any():
        metrics.insert(1, "aid_oa_tr20")
    rows = []
    for method, s in main.groupby("method", sort=False):
        row = {"method": method, "backbone": s["backbone"].iloc[0]}
        vals = s.set_index("metric")["value"]
        for m in metrics:
            v = vals.get(m, math.nan)
            row[LABELS[m]] = "-" if pd.isna(v) else f"{float(v):.2f}"
        rows.append(row)
    if best is not None and len(best):
        n = len(best)
        row = {"method": f"ours ({best['model'].iloc[0]}, {fmt_size(best['data_size'].iloc[0])} images, "
                         f"{n} run{'s' if n > 1 else ''})", "backbone": "Mamba"}
        for m in metrics:
            vals = best[m].dropna() if m in best else pd.Series(dtype=float)
            row[LABELS[m]] = ("-" if vals.empty else f"{vals.mean():.2f}"
                              + (f" +- {vals.std(ddof=1):.2f}" if len(vals) > 1 else ""))
        rows.append(row)
    return pd.DataFrame(rows)


PAPER_OPTIONS = {"ares.descriptor": ("lbp",), "msp.scales": ("[6]", "(6,)", "6"), "msp.weight": ("0.1",)}


def _paper_options(row) -> bool:
    """Whether a run's ARES/MSP options are the paper's (LBP descriptor, one 6x6 MSP scale, lambda 0.1);
    an option that was not logged counts as its default, which is the paper's."""
    return all(row.get(k) is None or (isinstance(row.get(k), float) and math.isnan(row[k])) or str(row[k]) in ok
               for k, ok in PAPER_OPTIONS.items())


ABLATION_ORDER = {"ARM baseline": 0, "+ARES": 1, "+MSP": 2, "+ARES+MSP": 3}
# The ablation's loss: the held-out token loss, the same target for every variant; val_loss adds
# msp.weight x the MSP block loss for MSP runs, so it ranks variants by what they are asked to predict.
ABLATION_LOSS = ("val_loss_token", "val_loss")


def ablation_metrics(df: pd.DataFrame, metrics=("aid_oa_tr20", "aid_oa_tr50")) -> tuple[list[str], list[str]]:
    """The columns the ablation compares (AID OA, then the held-out token loss) and the warnings."""
    have = lambda m: m in df and df[m].notna().any()  # noqa: E731
    out = [m for m in metrics if have(m)] or [m for m in PERCENT_METRICS if have(m)]
    warnings = []
    loss = next((m for m in ABLATION_LOSS if have(m)), None)
    if loss == "val_loss":
        warnings.append("ablation: no run logged val_loss_token (a store from before it): the loss column is "
                        "val_loss, which for MSP runs includes msp.weight x the MSP block loss, so it does not "
                        "compare the variants on one target")
    return out + ([loss] if loss else []), warnings


def ablation_table(df: pd.DataFrame, paper: pd.DataFrame, metrics=("aid_oa_tr20", "aid_oa_tr50")) -> pd.DataFrame:
    """Ours per (model, data size, ablation setting) (mean, std over seeds) beside the paper's ablation rows.

    Only the (model, data size) cells that hold at least two settings are an ablation; a setting's
    row never pools runs of other models or sizes (a data sweep's runs are not ablation rows).
    `.attrs["warnings"]`: why a column may mislead (ablation_metrics)."""
    df = df.assign(ablation=ablation_labels(df), paper_setting=[_paper_options(r) for _, r in df.iterrows()])
    metrics, warnings = ablation_metrics(df, metrics)
    keys = ["model", "data_size"]
    cells = df.groupby(keys, sort=True)["ablation"].nunique()
    cells = cells[cells >= 2].index
    df = df[pd.MultiIndex.from_frame(df[keys]).isin(cells)]
    if df.empty:
        t = pd.DataFrame()
        t.attrs["warnings"] = warnings
        return t
    g = group_seeds(df, keys + ["ablation", "paper_setting"], metrics)
    pab = paper[paper["section"] == "ablation"].pivot_table(index="method", columns="metric", values="value")
    rows = []
    for _, r in g.iterrows():
        row = {"model": r["model"], "data size": fmt_size(r["data_size"]), "setting": r["ablation"],
               "runs": int(r["n_runs"])}
        # The paper's number stands beside our run only when the options match its setting.
        base = r["ablation"].split(" (")[0] if r["paper_setting"] else None
        for m in metrics:
            row[f"{m} ours"] = r[f"{m}_mean"]
            row[f"{m} std"] = r[f"{m}_std"] if r[f"{m}_n"] > 1 else math.nan
            if m in PERCENT_METRICS:
                row[f"{m} paper"] = float(pab.loc[base, m]) if base in pab.index and m in pab.columns else math.nan
        order = (r["model"], r["data_size"], ABLATION_ORDER.get(r["ablation"].split(" (")[0], 9), r["ablation"])
        rows.append((order, row))
    t = pd.DataFrame([row for _, row in sorted(rows, key=lambda o: o[0])])
    t.attrs["warnings"] = warnings
    return t


def frontier_table(fr: dict) -> pd.DataFrame:
    """The allocation exponents N_opt ~ C^a, D_opt ~ C^b: from the envelope and from the joint law."""
    rows = []
    for name, d in (("envelope of the runs (approach 1)", fr.get("envelope_fit", {})),
                    ("joint law L(N, D) (approach 3)", fr.get("law_fit", {}))):
        row = {"estimate": name}
        for k in ("a", "b"):
            ci = d.get(f"{k}_ci95")
            row[k] = (f"{d[k]:.3g}" + (f" [{ci[0]:.3g}, {ci[1]:.3g}]" if ci else "")) if d.get("available") else ""
        row["note"] = "" if d.get("available") else d.get("reason", "")
        rows.append(row)
    return pd.DataFrame(rows)
