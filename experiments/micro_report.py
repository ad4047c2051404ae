"""Summarise the micro study: per-point means over seeds beside the random-init floor, one figure.

    python experiments/micro_report.py --analysis outputs/analysis/micro_study \\
        --floor outputs/micro_study/floor --out docs/results [--name micro_study]

Reads what experiments/micro_study.sh leaves behind: analysis/fit_scaling.py's runs.csv and
fits.json (the fitted laws, bootstrap CIs) and the random-init probes floor/<model>/probe_aid.json.
Writes <out>/<name>_summary.png (data scaling, model scaling, ablation; floor drawn in each) and
prints Markdown tables (data scaling, model scaling, ablation, floor, fitted exponents).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from roma import atomic  # noqa: E402

METRIC = "aid_oa_tr50"
TINY = "roma_micro_tiny"
ABLATION_ROWS = (("ARM baseline", False, False), ("+ARES", True, False), ("+ARES+MSP", True, True))


def _on(v) -> bool:
    return str(v).lower() in ("true", "1", "yes")


def load(analysis: Path, floor_dir: Path) -> tuple[pd.DataFrame, list[dict], dict[str, dict]]:
    runs_csv, fits_json = analysis / "runs.csv", analysis / "fits.json"
    for p in (runs_csv, fits_json):
        if not p.is_file():
            raise SystemExit(f"micro_report: {p} not found (run analysis/fit_scaling.py --out {analysis} first)")
    df = pd.read_csv(runs_csv)
    missing = [c for c in ("model", "param_count", "data_size", "seed", METRIC, "final_loss", "ares.enabled",
                           "msp.enabled") if c not in df.columns]
    if missing:
        raise SystemExit(f"micro_report: {runs_csv} lacks column(s) {missing}")
    df["ares"] = df["ares.enabled"].map(_on)
    df["msp"] = df["msp.enabled"].map(_on)
    floors = {}
    for f in sorted(floor_dir.glob("*/probe_aid.json")):
        doc = json.loads(f.read_text())
        accs = [r["test_acc"] for r in doc["ratios"][METRIC]["runs"]]
        floors[f.parent.name] = {"mean": statistics.fmean(accs), "std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
                                 "n": len(accs)}
    return df, json.loads(fits_json.read_text()), floors


def grouped(df: pd.DataFrame, key: str) -> pd.DataFrame:
    g = df.groupby(key, sort=True)
    acc = g[METRIC].agg(["mean", "std", "count"])
    loss = g["final_loss"].agg(["mean", "std"]).rename(columns={"mean": "loss_mean", "std": "loss_std"})
    return acc.join(loss).reset_index()


def fmt(mean: float, std: float) -> str:
    return f"{mean:.2f} ± {0.0 if math.isnan(std) else std:.2f}"


def tables(df, fits, floors) -> tuple[str, dict]:
    full = df[df.ares & df.msp]
    data = grouped(full[full.model == TINY], "data_size")
    model = grouped(full[full.data_size == full.data_size.max()], "param_count")
    model["model"] = [full[full.param_count == p].model.iloc[0] for p in model.param_count]
    abl_df = df[(df.model == TINY) & (df.data_size == 2500)]
    lines = ["**Data scaling** (micro-tiny, ARES+MSP; AID OA % at TR 50% of the probe set, mean ± std over seeds)", "",
             "| pretraining images | AID OA | seeds | final pretraining loss |", "|---:|---:|---:|---:|"]
    lines += [f"| {int(r.data_size)} | {fmt(r['mean'], r['std'])} | {int(r['count'])} | {fmt(r.loss_mean, r.loss_std)} |"
              for _, r in data.iterrows()]
    if TINY in floors:
        lines.append(f"| random init (floor) | {fmt(floors[TINY]['mean'], floors[TINY]['std'])} | "
                     f"{floors[TINY]['n']} probe seeds | - |")
    lines += ["", f"**Model scaling** ({int(full.data_size.max())} pretraining images)", "",
              "| model | encoder params | AID OA | seeds | random-init floor | final pretraining loss |",
              "|---|---:|---:|---:|---:|---:|"]
    for _, r in model.iterrows():
        fl = floors.get(r.model)
        lines.append(f"| {r.model} | {int(r.param_count):,} | {fmt(r['mean'], r['std'])} | {int(r['count'])} | "
                     f"{fmt(fl['mean'], fl['std']) if fl else '-'} | {fmt(r.loss_mean, r.loss_std)} |")
    lines += ["", "**Ablation** (micro-tiny, 2500 pretraining images)", "",
              "| variant | AID OA | seeds | final pretraining loss |", "|---|---:|---:|---:|"]
    abl = []
    for label, ares, msp in ABLATION_ROWS:
        s = abl_df[(abl_df.ares == ares) & (abl_df.msp == msp)]
        if len(s):
            m, sd = s[METRIC].mean(), s[METRIC].std()
            abl.append((label, m, sd, len(s)))
            lines.append(f"| {label} | {fmt(m, sd)} | {len(s)} | {fmt(s.final_loss.mean(), s.final_loss.std())} |")
    lines += ["", "**Fitted laws** (ours; error = 1 - OA/100; 95% bootstrap CIs; relative errors of leave-one-out"
              " and hold-largest-out predictions)", "",
              "| axis | metric | form | exponent b [95% CI] | LOO rel. err | hold-largest-out rel. err |",
              "|---|---|---|---|---:|---:|"]
    for f in fits:
        if f.get("source") != "ours" or "b" not in f.get("params", {}):
            continue
        lo, hi = f["ci95"].get("b", [float("nan")] * 2)
        loo = f.get("loo", {}).get("mean_abs_rel_err")
        ho = f.get("holdout", {}).get("mean_abs_rel_err")
        what = "AID error" if f["metric"] == METRIC else f["metric"]
        lines.append(f"| {f['axis']} | {what} | {f['form']} | {f['params']['b']:.4f} [{lo:.4f}, {hi:.4f}] | "
                     f"{'-' if loo is None else f'{loo:.4f}'} | {'-' if ho is None else f'{ho:.4f}'} |")
    return "\n".join(lines), {"data": data, "model": model, "ablation": abl, "full": full}


def figure(parts: dict, fits: list[dict], floors: dict, path: Path, title: str) -> None:
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2))
    full = parts["full"]

    def floor_band(ax, model, label=True):
        if model in floors:
            f = floors[model]
            ax.axhspan(f["mean"] - f["std"], f["mean"] + f["std"], color="0.88", zorder=0)
            ax.axhline(f["mean"], color="0.4", ls=":", zorder=1, label=f"random init ({model}) ± std" if label else None)

    def law(ax, axis, xs):
        for f in fits:
            if f.get("source") == "ours" and f["axis"] == axis and f["metric"] == METRIC and f["form"] == "power":
                a, b = f["params"]["a"], f["params"]["b"]
                lo, hi = f["ci95"]["b"]
                xx = pd.Series(sorted(xs))
                ax.plot(xx, 100 * (1 - a * xx ** b), "C0-", lw=1,
                        label=f"power law on error: b = {b:.3f} [{lo:.3f}, {hi:.3f}]")

    ax = axes[0]
    pts = full[full.model == TINY]
    ax.scatter(pts.data_size, pts[METRIC], s=10, color="C0", alpha=0.35, label="one seed")
    d = parts["data"]
    ax.errorbar(d.data_size, d["mean"], yerr=d["std"].fillna(0), fmt="o", color="C0", capsize=3, label="mean ± std")
    law(ax, "data", d.data_size)
    floor_band(ax, TINY)
    ax.set(xscale="log", xlabel="pretraining images (micro-tiny)", ylabel="AID OA (%), TR 50%", title="data scaling")
    ax.set_xticks(list(d.data_size), [str(int(x)) for x in d.data_size])
    ax.minorticks_off()
    ax = axes[1]
    m = parts["model"]
    pts = full[full.data_size == full.data_size.max()]
    ax.scatter(pts.param_count, pts[METRIC], s=10, color="C1", alpha=0.35, label="one seed")
    ax.errorbar(m.param_count, m["mean"], yerr=m["std"].fillna(0), fmt="o", color="C1", capsize=3, label="mean ± std")
    law(ax, "model", m.param_count)
    fl = [(p, floors[n]) for p, n in zip(m.param_count, m.model) if n in floors]
    if fl:
        ax.errorbar([p for p, _ in fl], [f["mean"] for _, f in fl], yerr=[f["std"] for _, f in fl], fmt="x",
                    color="0.4", capsize=3, label="random init (same size)")
    ax.set(xscale="log", xlabel=f"encoder parameters ({int(full.data_size.max())} images)", title="model scaling")
    ax.set_xticks(list(m.param_count), [f"{n.replace('roma_micro_', '')}\n{p / 1e6:.2f}M" for n, p in zip(m.model, m.param_count)])
    ax.minorticks_off()
    ax = axes[2]
    abl = parts["ablation"]
    if abl:
        ax.bar(range(len(abl)), [a[1] for a in abl], yerr=[0 if math.isnan(a[2]) else a[2] for a in abl],
               color=[{"ARM baseline": "0.6", "+ARES": "C2"}.get(a[0], "C0") for a in abl], capsize=4, zorder=2)
        ax.set_xticks(range(len(abl)), [f"{a[0]}\n(n={a[3]})" for a in abl])
        lo = min(a[1] for a in abl) - 4
        ax.set_ylim(min(lo, floors.get(TINY, {"mean": lo})["mean"] - 2), None)
    floor_band(ax, TINY)
    ax.set(title="ablation (micro-tiny, 2500 images)")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    with atomic.replacing(path) as tmp:
        fig.savefig(tmp, dpi=130, format="png")
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--analysis", type=Path, required=True, help="fit_scaling.py's --out folder")
    p.add_argument("--floor", type=Path, required=True, help="folder of <model>/probe_aid.json random-init probes")
    p.add_argument("--out", type=Path, required=True, help="where the summary figure goes")
    p.add_argument("--name", default="micro_study")
    p.add_argument("--title", default="RoMA micro study on AID (2 CPU cores)")
    a = p.parse_args(argv)
    df, fits, floors = load(a.analysis, a.floor)
    text, parts = tables(df, fits, floors)
    a.out.mkdir(parents=True, exist_ok=True)
    figure(parts, fits, floors, a.out / f"{a.name}_summary.png", a.title)
    print(text)
    print(f"\nfigure: {a.out / (a.name + '_summary.png')}")


if __name__ == "__main__":
    main()
