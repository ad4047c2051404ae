"""Summarise the micro study: per-point means over seeds beside the random-init floor, one figure.

    python experiments/micro_report.py --analysis outputs/analysis/micro_study \\
        --floor outputs/micro_study/floor --out docs/results [--name micro_study]

Reads what experiments/micro_study.sh leaves behind: analysis/fit_scaling.py's runs.csv and
fits.json (read from the MLflow store: the fitted laws, bootstrap CIs) and the random-init probes
floor/<model>/probe_aid.json. Writes <out>/<name>_summary.png (data scaling, model scaling,
ablation; floor drawn in each) and prints Markdown tables (data scaling, model scaling with the
gain over each size's floor, ablation with Welch's t-test against seed noise, fitted exponents).
With --tracking-uri it also draws <out>/<name>_loss_curves.png (each run's pretraining loss against
steps, from MLflow); with --readme (docs/micro_study.md) it replaces the text between
`<!-- micro-study:begin -->` and `<!-- micro-study:end -->` by the section (nothing by hand).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from scipy import stats  # noqa: E402

from roma import atomic  # noqa: E402

BEGIN, END = "<!-- micro-study:begin -->", "<!-- micro-study:end -->"
METRIC = "aid_oa_tr50"
LOSS = "val_loss"  # the held-out pretraining loss (final_loss is only the last batch's)
# What every run of the study must have logged (roma.run): a store without them predates the held-out
# loss and per-run compute, and its laws would not be the ones this report describes.
REQUIRED_METRICS = (LOSS, "train_flops", "device_hours")
# The ablation's loss column: the held-out token loss (no MSP term; every run scores the same held-out
# tensors), comparable across variants where val_loss is not (it adds the MSP term). Older tables lack it.
ABLATION_LOSS = "val_loss_token"
TINY = "roma_micro_tiny"
ABLATION_ROWS = (("ARM baseline", False, False), ("+ARES", True, False), ("+ARES+MSP", True, True))
FIXED_STEPS_AXIS = "train.steps"  # the sweep axis of scaling_data_micro_fixed_steps (its runs: `...-fixed_steps`)


def fixed_steps_runs(df: pd.DataFrame) -> pd.Series:
    """True for the fixed-steps control's runs (swept over train.steps): never pooled with the epoch axis."""
    by_sweep = df["sweep"].fillna("").astype(str).str.split(",").map(lambda axes: FIXED_STEPS_AXIS in axes) \
        if "sweep" in df.columns else pd.Series(False, index=df.index)
    by_name = df["run_name"].fillna("").astype(str).str.endswith("-fixed_steps") \
        if "run_name" in df.columns else pd.Series(False, index=df.index)
    return by_sweep | by_name


def _on(v) -> bool:
    return str(v).lower() in ("true", "1", "yes")


def load(analysis: Path, floor_dir: Path) -> tuple[pd.DataFrame, list[dict], dict[str, dict]]:
    runs_csv, fits_json = analysis / "runs.csv", analysis / "fits.json"
    for p in (runs_csv, fits_json):
        if not p.is_file():
            raise SystemExit(f"micro_report: {p} not found (run analysis/fit_scaling.py --out {analysis} first)")
    df = pd.read_csv(runs_csv)
    missing = [c for c in ("model", "param_count", "data_size", "seed", METRIC, *REQUIRED_METRICS, "ares.enabled",
                           "msp.enabled") if c not in df.columns]
    if missing:
        raise SystemExit(f"micro_report: {runs_csv} lacks column(s) {missing}")
    for c in REQUIRED_METRICS:
        bad = df[df[c].isna()]
        if len(bad):
            raise SystemExit(f"micro_report: {len(bad)} of {len(df)} runs in {runs_csv} did not log {c!r} "
                             f"(runs from before it was logged?): {list(bad.run_name)[:10] if 'run_name' in bad else ''}")
    df["ares"] = df["ares.enabled"].map(_on)
    df["msp"] = df["msp.enabled"].map(_on)
    df["fixed_steps"] = fixed_steps_runs(df)
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
    loss = g[LOSS].agg(["mean", "std"]).rename(columns={"mean": "loss_mean", "std": "loss_std"})
    return acc.join(loss).reset_index()


def fmt(mean: float, std: float, digits: int = 2) -> str:
    return f"{mean:.{digits}f} ± {0.0 if math.isnan(std) else std:.{digits}f}"


def tables(df, fits, floors) -> tuple[str, dict]:
    fixed, df = df[df.fixed_steps], df[~df.fixed_steps]  # the control is a table of its own
    full = df[df.ares & df.msp]
    data = grouped(full[full.model == TINY], "data_size")
    model = grouped(full[full.data_size == full.data_size.max()], "param_count")
    model["model"] = [full[full.param_count == p].model.iloc[0] for p in model.param_count]
    abl_df = df[(df.model == TINY) & (df.data_size == 2500)]
    abl_loss = ABLATION_LOSS if ABLATION_LOSS in df.columns and df[ABLATION_LOSS].notna().any() else LOSS
    lines = ["**Data scaling** (micro-tiny, ARES+MSP; AID OA % at TR 50% of the probe set, mean ± std over seeds)", "",
             "| pretraining images | AID OA | seeds | held-out loss |", "|---:|---:|---:|---:|"]
    lines += [f"| {int(r.data_size)} | {fmt(r['mean'], r['std'])} | {int(r['count'])} | {fmt(r.loss_mean, r.loss_std, 4)} |"
              for _, r in data.iterrows()]
    if TINY in floors:
        lines.append(f"| random init (floor) | {fmt(floors[TINY]['mean'], floors[TINY]['std'])} | "
                     f"{floors[TINY]['n']} probe seeds | - |")
    lines += ["", f"**Model scaling** ({int(full.data_size.max())} pretraining images)", "",
              "| model | encoder params | AID OA | seeds | random-init floor | gain over floor | held-out loss |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    for _, r in model.iterrows():
        fl = floors.get(r.model)
        gain = f"{r['mean'] - fl['mean']:+.2f}" if fl else "-"
        lines.append(f"| {r.model} | {int(r.param_count):,} | {fmt(r['mean'], r['std'])} | {int(r['count'])} | "
                     f"{fmt(fl['mean'], fl['std']) if fl else '-'} | {gain} | {fmt(r.loss_mean, r.loss_std, 4)} |")
    if len(fixed):
        fx = fixed[fixed.ares & fixed.msp & (fixed.model == TINY)]
        g = grouped(fx, "data_size")
        seen = sorted({int(i) for i in fx.images_seen.dropna()}) if "images_seen" in fx else []
        lines += ["", "**Fixed-steps control** (micro-tiny, ARES+MSP, the same optimizer steps for every subset"
                  f"{f': {seen[0]:,} training images each' if len(seen) == 1 else ''}; data and steps not confounded)", "",
                  "| pretraining images | AID OA | seeds | held-out loss |", "|---:|---:|---:|---:|"]
        lines += [f"| {int(r.data_size)} | {fmt(r['mean'], r['std'])} | {int(r['count'])} | "
                  f"{fmt(r.loss_mean, r.loss_std, 4)} |" for _, r in g.iterrows()]
    loss_name = "held-out token loss" if abl_loss == ABLATION_LOSS else "held-out loss (with the MSP term: not comparable)"
    lines += ["", "**Ablation** (micro-tiny, 2500 pretraining images)", "",
              f"| variant | AID OA | seeds | {loss_name} |", "|---|---:|---:|---:|"]
    abl, samples = [], {}
    for label, ares, msp in ABLATION_ROWS:
        s = abl_df[(abl_df.ares == ares) & (abl_df.msp == msp)]
        if len(s):
            m, sd = s[METRIC].mean(), s[METRIC].std()
            abl.append((label, m, sd, len(s)))
            samples[label] = list(s[METRIC])
            lines.append(f"| {label} | {fmt(m, sd)} | {len(s)} | {fmt(s[abl_loss].mean(), s[abl_loss].std(), 4)} |")
    lines += ["", *ablation_tests(samples)]
    lines += ["", "**Fitted laws** (ours; error = 1 - OA/100, loss = held-out pretraining loss; the form chosen "
              "by evidence (`--form auto`: lack-of-fit F-test against the per-seed spread, AICc, the "
              "extrapolation check; analysis/selection.py); 95% bootstrap CIs, seeds resampled within each size; "
              "leave-one-size-out error; the extrapolation check: the law refitted without its largest size "
              "predicts that size's seed mean, with the bootstrap 95% interval of the prediction)", "",
              "| axis | curve | metric | form | params [95% CI] | lack of fit | AICc (candidates) | LOO rel. err "
              "| held-out x | observed | predicted [95% CI] | rel. err | observed in CI |",
              "|---|---|---|---|---|---|---|---:|---:|---:|---|---:|---|"]
    for f in fits:
        if f.get("source") != "ours" or f["axis"] == "joint":
            continue
        loo = f.get("loo", {}).get("mean_abs_rel_err")
        what = {METRIC: "AID error", LOSS: "held-out loss", "val_loss_token": "held-out token loss"}.get(f["metric"], f["metric"])
        axis = f["axis"] if f.get("data_axis") in (None, "data_size", "images_seen") else f"{f['axis']} vs {f['data_axis']}"
        pts = (f.get("holdout") or {}).get("points") or []
        if pts and (f.get("holdout") or {}).get("available"):
            p = pts[-1]
            ci = f" [{p['pred_ci95'][0]:.4g}, {p['pred_ci95'][1]:.4g}]" if p.get("pred_ci95") else ""
            inci = "-" if p.get("observed_in_ci95") is None else ("yes" if p["observed_in_ci95"] else "no")
            check = f"{p['x']:.4g} | {p['observed']:.4g} | {p['predicted']:.4g}{ci} | {p['rel_err']:.2%} | {inci}"
        else:
            check = "- | - | " + (f.get("holdout") or {}).get("reason", "-") + " | - | -"
        params = "; ".join(f"{k}={v:.4g}" + (f" [{f['ci95'][k][0]:.4g}, {f['ci95'][k][1]:.4g}]" if k in f["ci95"] else "")
                           for k, v in f["params"].items())
        lof = f.get("lack_of_fit") or {}
        lof_text = (f"F({lof['df'][0]},{lof['df'][1]}) = {lof['F']:.3g}, p = {lof['p']:.2g}"
                    + (" **fails**" if lof["fails"] else "") if lof.get("testable") else "untestable")
        aiccs = "; ".join(f"{k} {c['aicc']:.1f}" for k, c in (f.get("selection") or {}).get("candidates", {}).items()
                          if c.get("fitted") and c.get("aicc") is not None and math.isfinite(c["aicc"]))
        lines.append(f"| {axis} | {f.get('curve', '')} | {what} | {f['form']} | {params} | {lof_text} | {aiccs} | "
                     f"{'-' if loo is None else f'{loo:.4f}'} | {check} |")
    return "\n".join(lines), {"data": data, "model": model, "ablation": abl, "full": full, "fixed": fixed}


def ablation_tests(samples: dict[str, list[float]]) -> list[str]:
    """Each ablation step against the previous row: difference of means and Welch's t-test p-value
    (do the differences exceed the seed noise?)."""
    out = []
    labels = [lab for lab, _, _ in ABLATION_ROWS if lab in samples]
    for a, b in zip(labels, labels[1:]):
        x, y = samples[b], samples[a]
        if len(x) < 2 or len(y) < 2:
            continue
        p = stats.ttest_ind(x, y, equal_var=False).pvalue
        verdict = "exceeds seed noise (p < 0.05)" if p < 0.05 else "within seed noise (p >= 0.05)"
        out.append(f"- {b} vs {a}: {statistics.fmean(x) - statistics.fmean(y):+.2f} points, Welch t-test "
                   f"p = {p:.3f} over {len(x)} + {len(y)} seeds: {verdict}.")
    return out


def loss_curves(tracking_uri: str, experiment: str, path: Path) -> bool:
    """Pretraining loss against step of every finished ARES+MSP run: left, micro-tiny at each data size;
    right, each model at the largest data size the model runs share (only runs at that size)."""
    from mlflow.tracking import MlflowClient

    from analysis.runs import fixed_steps
    from roma.metric_names import candidates

    client = MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return False
    runs = client.search_runs([exp.experiment_id], "attributes.status = 'FINISHED'", max_results=1000)
    curves = []  # (model, data size, history)
    for r in runs:
        p = r.data.params
        if str(p.get("ares.enabled")).lower() != "true" or str(p.get("msp.enabled")).lower() != "true":
            continue
        if fixed_steps(p.get(FIXED_STEPS_AXIS)) is not None:  # the fixed-steps control: not these curves
            continue
        hist = sorted({m.step: m.value for key in reversed(candidates("loss"))  # train/loss, or older stores' loss
                       for m in client.get_metric_history(r.info.run_id, key)}.items())
        if hist:
            curves.append((p.get("model.name", "?"), int(float(p.get("data.subset") or 0)), hist))
    if not curves:
        return False
    draw_loss_curves(curves, path)
    return True


def draw_loss_curves(curves: list[tuple[str, int, list]], path: Path) -> dict:
    """The loss-curve figure from (model, data size, [(step, loss), ...]); returns what each panel drew,
    {"sizes": {size: n runs}, "models": {model: n runs}, "model_size": the size of the model panel}."""
    sizes: dict[int, list] = {}
    for model, size, hist in curves:
        if model == TINY:
            sizes.setdefault(size, []).append(hist)
    models_at = {}  # data size -> the models run there
    for model, size, _ in curves:
        models_at.setdefault(size, set()).add(model)
    shared = [s for s, ms in models_at.items() if len(ms) > 1]
    model_size = max(shared) if shared else max(models_at)
    models: dict[str, list] = {}
    for model, size, hist in curves:
        if size == model_size:  # only runs at the panel's stated size
            models.setdefault(model, []).append(hist)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.6))
    for ax, groups, what in ((axes[0], sizes, "pretraining images (micro-tiny)"),
                             (axes[1], models, f"model ({model_size} images)")):
        for i, key in enumerate(sorted(groups, key=str)):
            for j, hist in enumerate(groups[key]):
                ax.plot(*zip(*hist), color=f"C{i}", lw=1, alpha=0.7,
                        label=f"{key} ({len(groups[key])} runs)" if j == 0 else None)
        ax.set(xlabel="optimizer step", ylabel="pretraining loss", xscale="log", title=f"loss curves by {what}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=3)  # outside: never over a curve
    fig.tight_layout()
    with atomic.replacing(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return {"sizes": {k: len(v) for k, v in sizes.items()}, "models": {k: len(v) for k, v in models.items()},
            "model_size": model_size}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return f"{platform.machine()} CPU"


def readme_section(text: str, fits: list[dict], name: str, out: Path, readme: Path, timings: dict,
                   have_curves: bool, compute: dict | None = None) -> str:
    """The results section of docs/micro_study.md: how it was made, the tables, the verdicts, the figures."""
    def git(*a):
        r = subprocess.run(["git", "-C", str(readme.parent), *a], capture_output=True, text=True)
        return r.stdout.strip()

    rel = lambda p: os.path.relpath(p, readme.parent)
    commit = git("rev-parse", "--short", "HEAD") or "?"
    # the code's state: this report's own outputs (the README, the figures) do not make it dirty
    dirty = " (with uncommitted changes)" if git("status", "--porcelain", "--untracked-files=no", "--", ".",
                                                 f":(exclude){rel(readme)}", f":(exclude){rel(out)}") else ""
    data_fit = next((f for f in fits if f.get("source") == "ours" and f["axis"] == "data"
                     and f["metric"] == METRIC and "b" in f.get("params", {})), None)
    lines = [BEGIN, f"_Generated by `experiments/micro_study.sh` from the MLflow store of experiment `{name}` "
             f"on {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, code at commit `{commit}`{dirty}; "
             f"{cpu_model()}, {os.cpu_count()} cores._", ""]
    if timings:
        lines += [f"Wall time of the runs and floors: {timings.get('wall_min', 0):.0f} min "
                  f"({timings.get('cpu_min', 0):.0f} CPU-min in {timings.get('jobs_count', 0)} jobs).", ""]
    if compute:
        lines += [f"Pretraining compute of the {compute['runs']} runs: {compute['train_flops']:.3g} FLOPs "
                  f"(`train_flops`: 3 x forward FLOPs per image x images seen), {compute['device_hours']:.2f} "
                  f"device-hours measured.", ""]
    lines += [text, ""]
    if data_fit:
        lo, hi = data_fit["ci95"]["b"]
        lines.append(f"Data-scaling exponent of the AID error: {data_fit['params']['b']:.4f} [{lo:.4f}, {hi:.4f}]; "
                     f"the 95% bootstrap CI {'excludes' if lo > 0 or hi < 0 else 'includes'} 0.")
        lines.append("")
    lines.append(f"![micro study]({rel(out / f'{name}_summary.png')})")
    if have_curves:
        lines += ["", f"![loss curves]({rel(out / f'{name}_loss_curves.png')})"]
    lines.append(END)
    return "\n".join(lines)


def write_readme(readme: Path, section: str) -> None:
    text = readme.read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"micro_report: {readme} has no {BEGIN} ... {END} markers")
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    atomic.write_text(readme, head + section + tail)


def figure(parts: dict, fits: list[dict], floors: dict, path: Path, title: str) -> None:
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2))
    full = parts["full"]

    def floor_band(ax, model, label=True):
        if model in floors:
            f = floors[model]
            ax.axhspan(f["mean"] - f["std"], f["mean"] + f["std"], color="0.88", zorder=0)
            ax.axhline(f["mean"], color="0.4", ls=":", zorder=1, label=f"random init ({model}) ± std" if label else None)

    def law(ax, axis, xs):
        import numpy as np

        from analysis.laws import LAWS

        for f in fits:
            if (f.get("source") == "ours" and f["axis"] == axis and f["metric"] == METRIC and f["form"] in LAWS
                    and f.get("data_axis", "data_size") in ("data_size", "images_seen")):
                b = f["params"]["b"]
                lo, hi = f["ci95"].get("b", [float("nan")] * 2)
                xx = np.geomspace(min(xs), max(xs), 60)
                flag = " (fails lack of fit)" if (f.get("lack_of_fit") or {}).get("fails") else ""
                ax.plot(xx, 100 * (1 - LAWS[f["form"]].predict(f["params"], xx[:, None])), "C0-", lw=1,
                        label=f"{f['form']} law on error: b = {b:.3f} [{lo:.3f}, {hi:.3f}]{flag}")

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
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.22))  # outside: never over a point
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
    p.add_argument("--tracking-uri", help="the MLflow store (for the loss curves)")
    p.add_argument("--experiment", help="the MLflow experiment (default: --name)")
    p.add_argument("--timings", type=Path, help="micro_study.py's timings.json (wall and CPU time)")
    p.add_argument("--compute", type=Path, help="fit_scaling.py --x train_flops's --out folder: its laws join the table")
    p.add_argument("--readme", type=Path, help="rewrite the micro-study section (between the markers) of this file")
    a = p.parse_args(argv)
    df, fits, floors = load(a.analysis, a.floor)
    if a.compute:
        path = a.compute / "fits.json"
        if not path.is_file():
            raise SystemExit(f"micro_report: {path} not found (run analysis/fit_scaling.py --x train_flops --out {a.compute})")
        fits = fits + json.loads(path.read_text())
    text, parts = tables(df, fits, floors)
    a.out.mkdir(parents=True, exist_ok=True)
    figure(parts, fits, floors, a.out / f"{a.name}_summary.png", a.title)
    curves = bool(a.tracking_uri) and loss_curves(a.tracking_uri, a.experiment or a.name, a.out / f"{a.name}_loss_curves.png")
    print(text)
    print(f"\nfigure: {a.out / (a.name + '_summary.png')}")
    if a.readme:
        timings = json.loads(a.timings.read_text()) if a.timings and a.timings.is_file() else {}
        compute = {"runs": len(df), "train_flops": float(df["train_flops"].sum()),
                   "device_hours": float(df["device_hours"].sum())}
        write_readme(a.readme, readme_section(text, fits, a.name, a.out, a.readme, timings, curves, compute))
        print(f"results section rewritten: {a.readme}")


if __name__ == "__main__":
    main()
