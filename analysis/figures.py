"""Figures (PNG + PDF, Agg backend): data/model scaling panels, ablation bars, high-res memory/speed.

    scaling_figure(fits, "data", xlabel)  the data-scaling Figure: per metric (PANELS) a panel of ours and,
                                         beside it, one of the paper's points (never on our axes)
    drawn_points(fig)                    the values a scaling figure drew (panel, source, x, y)
    plot_scaling(fits, "data", out)      the same saved as data_scaling.{png,pdf}
    plot_ablation(table, out)            ablation.{png,pdf}
    plot_highres(df, out)                highres.{png,pdf}; df columns model, resolution, peak_mem_mb,
                                         samples_per_s (status optional): benchmarks/highres.py calls it
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from analysis.laws import LAWS  # noqa: E402
from analysis.runs import LABELS, LOSS_METRICS, PERCENT_METRICS, from_error_like, load_paper  # noqa: E402

STYLE = {"font.size": 9, "axes.spines.top": False, "axes.spines.right": False, "legend.fontsize": 7,
         "legend.frameon": False, "axes.grid": True, "grid.alpha": 0.3, "savefig.dpi": 200}
XLABEL = {"data": "pretraining images", "model": "encoder parameters"}


def save(fig, out: str | Path, stem: str) -> list[Path]:
    """Write stem.png and stem.pdf under out, each to a temp file then renamed (atomic)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for ext in ("png", "pdf"):
        path = out / f"{stem}.{ext}"
        tmp = out / f".{stem}.tmp.{ext}"
        fig.savefig(tmp, format=ext, bbox_inches="tight")
        os.replace(tmp, path)
        paths.append(path)
    plt.close(fig)
    return paths


def _tidy_log_x(ax) -> None:
    """Decade labels only: minor labels (2x10^6, 3x10^6, ...) collide on narrow panels."""
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())


def _exponent_label(res) -> str:
    """The exponent with its CI, the floor of a saturating form, and a lack-of-fit flag."""
    def one(k):
        v = res.params[k]
        return f"{k}={v:.3g}" + (f" [{res.ci95[k][0]:.3g}, {res.ci95[k][1]:.3g}]" if k in res.ci95 else "")

    parts = [one("b")] + [one(k) for k in ("E", "c") if k in res.params]  # one per line: a narrow panel's legend
    lof = res.lack_of_fit or {}
    if lof.get("fails"):
        parts.append(f"FAILS lack of fit (F({lof['df'][0]},{lof['df'][1]})={lof['F']:.3g}, p={lof['p']:.1g})")
    return "\n".join(parts)


def _draw_fit(ax, f: dict, color, linestyle: str, label: str) -> None:
    """The law (back in metric units) over the points' x range (+10% beyond), with its 95% band."""
    res, metric = f["fit"], f["metric"]
    x = f["points"]["x"].to_numpy(float)
    grid = np.geomspace(x.min(), x.max() * 1.1, 100)
    ax.plot(grid, from_error_like(metric, res.predict(grid[:, None])), color=color, ls=linestyle, lw=1.2,
            label=f"{label}: {res.form}\n" + _exponent_label(res))
    if res.samples is not None and len(res.samples):
        lo, hi = res.predict_band(grid[:, None])
        ax.fill_between(grid, from_error_like(metric, lo), from_error_like(metric, hi), color=color, alpha=0.15, lw=0)
    _draw_extrapolation(ax, res, metric, color)


def _draw_extrapolation(ax, res, metric: str, color) -> None:
    """The hold-largest-out check: the law fitted without the largest size, dashed, and its prediction
    there as a hollow marker with the bootstrap 95% interval as an error bar."""
    ho = res.holdout or {}
    pts = [p for p in ho.get("points") or [] if not isinstance(p["x"], list)]
    if not ho.get("available"):  # said in the legend: no marker, never a zero-width interval
        ax.plot([], [], " ", label="extrapolation check not possible (too few sizes left)")
        return
    if not pts or "params" not in ho:
        return
    x = np.array([p["x"] for p in pts])
    grid = np.geomspace(x.min() / 2, x.max(), 50)
    law = LAWS[res.form]
    ax.plot(grid, from_error_like(metric, law.predict(ho["params"], grid[:, None])), color=color, ls=":", lw=1)
    pred = np.array([p["predicted"] for p in pts])
    band = np.array([p["pred_ci95"] or [p["predicted"]] * 2 for p in pts])
    y, lo, hi = (from_error_like(metric, v) for v in (pred, band[:, 0], band[:, 1]))
    ax.errorbar(x, y, yerr=[np.abs(y - np.minimum(lo, hi)), np.abs(np.maximum(lo, hi) - y)], fmt="o", mfc="none",
                color=color, ms=7, capsize=3, lw=1, label=f"extrapolated to the largest ({ho['rel_err']:.2%} off the seed mean)")


# One panel per metric, in this order: the paper's figures have AID (TR 50%), OSCD and SpaceNet;
# our suite adds AID at TR 20%, UCM and the pretraining loss.
PANELS = ("aid_oa_tr50", "aid_oa_tr20", "oscd_f1", "spacenet_mf1", "ucm_oa_tr50", "val_loss_token", "val_loss",
          "final_loss")
PAPER_ONLY = " only, no runs of ours"  # a paper panel's title: "OSCD F1: paper only, no runs of ours"
PAPER_PANEL = "(read off its figure, at its own x)"  # the second line of every paper panel's title
NCOL = 4  # panels per row: a metric's pair (ours, the paper's) never straddles a row
# gids of what the scaling panels draw, so a test reads the drawn values back (figure == table)
GID_OURS, GID_PAPER = "ours points", "paper points"


def scaling_panels(fits: list[dict], axis: str) -> tuple[list[str], list[str]]:
    """The metrics that get a panel on `axis` (ours or the paper's points), and those left out (neither)."""
    have = {f["metric"] for f in fits if f["axis"] == axis}
    metrics = [m for m in PANELS if m in have] + sorted(have - set(PANELS))
    # a store from before the held-out losses has none: not a panel worth naming as missing
    return metrics, [m for m in PANELS if m not in have and m not in ("val_loss", "val_loss_token")]


def panel_layout(fits: list[dict], metrics: list[str], ncol: int = NCOL) -> list[tuple[str, str] | None]:
    """The panels in reading order, `ncol` a row: (metric, "ours") then (metric, "paper") where each
    has points; None is a blank cell, so that a metric's two panels sit side by side in one row."""
    cells: list[tuple[str, str] | None] = []
    for m in metrics:
        pair = [(m, src) for src in ("ours", "paper") if any(f["metric"] == m and f["source"] == src for f in fits)]
        if len(pair) == 2 and len(cells) % ncol == ncol - 1:
            cells.append(None)
        cells += pair
    return cells


def _draw_ours(ax, entries: list[dict], metric: str, colors) -> None:
    for i, f in enumerate(entries):
        c = colors[i % len(colors)]
        p = f["points"]
        eb = ax.errorbar(p["x"], p[f"{metric}_mean"], yerr=p[f"{metric}_std"], fmt="o", color=c, ms=4, capsize=2,
                         label=None if f["fit"] else f"ours {f['curve']} (not fitted)")
        eb.lines[0].set_gid(GID_OURS)
        if f["fit"]:
            _draw_fit(ax, f, c, "-", f"ours {f['curve']}")


def _draw_paper(ax, entries: list[dict], metric: str) -> None:
    """The paper's points (hollow where it did not measure) at its own x, and its law, dashed."""
    for f in entries:
        p = f["points"]
        m = p["measured"].to_numpy(bool)
        ax.plot(p["x"][m], p[f"{metric}_mean"][m], "s", color="k", ms=4, gid=GID_PAPER,
                label="paper (read off, +-0.3; at its own x)" if f.get("x_source") else "paper (read off, +-0.3)")
        if (~m).any():
            ax.plot(p["x"][~m], p[f"{metric}_mean"][~m], "s", mfc="none", color="k", ms=4, gid=GID_PAPER,
                    label="paper, not measured")
        if f["fit"]:
            _draw_fit(ax, {**f, "points": p[m]}, "k", "--", "paper")


def _size_label(x: float) -> str:
    """62500 -> '62.5K', 3.6e7 -> '36M': how the paper's figures label their x."""
    for scale, unit in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if x >= scale:
            return f"{x / scale:.3g}{unit}"
    return f"{x:.3g}"


def _paper_xticks(ax, entries: list[dict]) -> None:
    """Ticks at the paper's own x values, labelled as its figure labels them (its points, not ours)."""
    xs = sorted({float(v) for f in entries for v in f["points"]["x"]})
    ax.set_xticks(xs, [_size_label(v) for v in xs])
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())


def _paper_xlabel(entries: list[dict], xlabel: str) -> str:
    """The paper's x as its table says it is (x_source), else ours: its points are never moved."""
    src = "; ".join(sorted({f.get("x_source") or "" for f in entries} - {""}))
    return src.replace("paper figure's x: ", "paper's x: ") if src else xlabel


def scaling_figure(fits: list[dict], axis: str, xlabel: str, note: str = ""):
    """The figure of `axis` ('data' | 'model'), or None when it has no curve of ours: per metric, a
    panel of our curves (mean +- std over seeds, fit and band) and, beside it on its own axes with its
    own y range, a panel of the paper's points (hollow where the paper did not measure) with their own
    fit, dashed, at the paper's own x: our micro runs and the paper's models are not comparable on one
    axis, so no point of the paper's is ever drawn on ours. A metric with no runs of ours has the
    paper's panel alone, titled so; a metric with neither is left out, named in the figure's note."""
    fits = [f for f in fits if f["axis"] == axis]
    if not any(f["source"] == "ours" for f in fits):
        return None
    metrics, left_out = scaling_panels(fits, axis)
    cells = panel_layout(fits, metrics)
    with plt.rc_context(STYLE):
        ncol = min(NCOL, len(cells))
        nrow = math.ceil(len(cells) / ncol)
        fig, axes = plt.subplots(nrow, ncol, figsize=(3.6 * ncol, 4.3 * nrow), squeeze=False)
        colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
        for ax, cell in zip(axes.flat, cells):
            if cell is None:
                ax.set_visible(False)
                continue
            metric, source = cell
            entries = [f for f in fits if f["metric"] == metric and f["source"] == source]
            name = LABELS.get(metric, metric)
            ax.set_gid(f"{source}:{metric}")
            if source == "ours":
                _draw_ours(ax, entries, metric, colors)
                ax.set_title(f"{name}: ours", fontsize=9)
                ax.set_xlabel(xlabel)
            else:
                _draw_paper(ax, entries, metric)
                has_ours = any(f["metric"] == metric and f["source"] == "ours" for f in fits)
                ax.set_title(f"{name}: paper" + ("" if has_ours else PAPER_ONLY) + f"\n{PAPER_PANEL}", fontsize=8)
                ax.set_xlabel(_paper_xlabel(entries, xlabel), fontsize=8)
                ax.set_facecolor("0.97")  # the paper's panel, at a glance
            ax.set_xscale("log")
            ax.set_ylabel(name + (" (%)" if metric not in LOSS_METRICS else ""))
            _tidy_log_x(ax)
            if source == "paper":
                _paper_xticks(ax, entries)
            ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2))  # below the panel: never over the points
        for ax in list(axes.flat)[len(cells):]:
            ax.set_visible(False)
        notes = ([note] if note else []) + (
            [f"not shown (no curve of ours, not in the paper's figure): {', '.join(LABELS.get(m, m) for m in left_out)}"]
            if left_out else [])
        fig.suptitle(f"{axis} scaling" + "".join(f"\n{n}" for n in notes), fontsize=10 if not notes else 8)
        fig.tight_layout()
    return fig


def drawn_points(fig) -> pd.DataFrame:
    """What a scaling figure drew, read back from its artists: panel (the axes' gid, 'ours:<metric>' or
    'paper:<metric>'), source of the points (ours | paper), x, y; so a test holds it to its table."""
    rows = []
    for ax in fig.axes:
        for line in ax.lines:
            if line.get_gid() in (GID_OURS, GID_PAPER):
                src = "ours" if line.get_gid() == GID_OURS else "paper"
                rows += [(ax.get_gid(), src, float(x), float(y)) for x, y in zip(line.get_xdata(), line.get_ydata())]
    return pd.DataFrame(rows, columns=["panel", "source", "x", "y"])


def plot_scaling(fits: list[dict], axis: str, out: str | Path, xlabel: str | None = None, note: str = "") -> list[Path]:
    """scaling_figure saved as {axis}_scaling.{png,pdf}; nothing when the axis has no curve of ours."""
    fig = scaling_figure(fits, axis, xlabel or XLABEL[axis], note)
    return save(fig, out, f"{axis}_scaling") if fig is not None else []


def ablation_figure(table: pd.DataFrame):
    """The ablation bars: one row of panels per (model, data size) cell of the table (analysis.tables.
    ablation_table), one panel per metric, one bar per setting (mean over seeds, std as error bar),
    the paper's bar beside ours only where it has a number (and only then "paper" in the legend).

    Returns (figure, bars): bars is a DataFrame read back from the drawn rectangles (model, data size,
    setting, metric, source, value), so a test can hold the figure to its table."""
    metrics = [c[: -len(" ours")] for c in table.columns if c.endswith(" ours")]
    if table.empty or not metrics:
        return None, pd.DataFrame()
    cells = list(dict.fromkeys(zip(table["model"], table["data size"])))
    drawn = []
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(len(cells), len(metrics), figsize=(3.6 * len(metrics), 3.0 * len(cells)),
                                 squeeze=False)
        for (model, size), row_axes in zip(cells, axes):
            t = table[(table["model"] == model) & (table["data size"] == size)].reset_index(drop=True)
            x = np.arange(len(t))
            for ax, m in zip(row_axes, metrics):
                has_paper = f"{m} paper" in t and t[f"{m} paper"].notna().any()
                w = 0.4 if has_paper else 0.6
                ours = ax.bar(x - (0.2 if has_paper else 0), t[f"{m} ours"], w, yerr=t[f"{m} std"].fillna(0),
                              capsize=2, label="ours (mean +- std over seeds)")
                drawn += [(model, size, s, m, "ours", r.get_height()) for s, r in zip(t["setting"], ours)]
                std = t[f"{m} std"].fillna(0)
                vals = pd.concat([t[f"{m} ours"] - std, t[f"{m} ours"] + std]).dropna()  # the error bars fit
                if has_paper:
                    keep = t[f"{m} paper"].notna().to_numpy()
                    paper = ax.bar((x + 0.2)[keep], t[f"{m} paper"][keep], w, color="0.6", label="paper")
                    drawn += [(model, size, s, m, "paper", r.get_height()) for s, r in zip(t["setting"][keep], paper)]
                    vals = pd.concat([vals, t[f"{m} paper"].dropna()])
                if len(vals):
                    pad = 0.3 * ((vals.max() - vals.min()) or abs(vals.max()) * 0.05 or 1.0)
                    lo = vals.min() - pad
                    ax.set_ylim(max(0.0, lo) if m in PERCENT_METRICS else lo, vals.max() + pad)
                ax.set_xticks(x, [f"{s}\n(n={n})" for s, n in zip(t["setting"], t["runs"])], rotation=20, ha="right")
                ax.set_ylabel(LABELS.get(m, m) + (" (%)" if m in PERCENT_METRICS else ""))
                ax.set_title(f"{model}, {size} images" + ("\nval_loss: + MSP block loss for MSP runs, not one target"
                                                           if m == "val_loss" else ""), fontsize=8)
                ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.35))  # below the panel: never over a bar
        fig.tight_layout()
    bars = pd.DataFrame(drawn, columns=["model", "data size", "setting", "metric", "source", "value"])
    return fig, bars


def plot_ablation(table: pd.DataFrame, out: str | Path) -> dict:
    """ablation_figure saved as ablation.{png,pdf}: {"paths": [...], "bars": the drawn bar values}."""
    fig, bars = ablation_figure(table)
    return {"paths": save(fig, out, "ablation") if fig is not None else [], "bars": bars}


def frontier_figure(joint: dict):
    """The compute-optimal frontier (analysis.frontier) of a joint fit entry (analysis.study.fit_joint):
    left, every (N, D) cell's seed-mean loss against its compute, one colour per N, the envelope and
    the joint law's optimum L(N_opt(C), D_opt(C)); right, N and D along the envelope with the
    allocation laws N_opt ~ C^a, D_opt ~ C^b (envelope fit and law fit, exponents with 95% CIs)."""
    from analysis.frontier import law_optimum

    fr = joint.get("frontier")
    if not fr:
        return None
    cells, env = pd.DataFrame(fr["cells"]), pd.DataFrame(fr["envelope"])
    law, ef = fr.get("law_fit", {}), fr.get("envelope_fit", {})
    ci = lambda d, k: f"{d[k]:.2f} [{d[k + '_ci95'][0]:.2f}, {d[k + '_ci95'][1]:.2f}]" if k + "_ci95" in d else f"{d[k]:.2f}"  # noqa: E731
    with plt.rc_context(STYLE):
        fig, (ax, ax2) = plt.subplots(1, 2, figsize=(9.5, 3.8))
        for i, (N, s) in enumerate(cells.groupby("N", sort=True)):
            ax.plot(s["C"], s["loss"], "o-", color=f"C{i}", ms=4, lw=0.8, label=f"N = {N / 1e6:.3g}M")
        ax.plot(env["C"], env["loss"], "k--", lw=1.2, label="envelope (no cheaper cell is lower)")
        grid = np.geomspace(cells["C"].min(), cells["C"].max(), 60)
        if law.get("available"):
            ax.plot(grid, law_optimum(joint["fit"], grid, fr["kappa"], law["G"], law["a"], law["b"])[2], color="0.4",
                    lw=1, label="joint law at its optimum")
        ax.set(xscale="log", xlabel="pretraining FLOPs (train_flops)", ylabel=LABELS.get(joint["metric"], joint["metric"]),
               title=f"compute-optimal frontier ({joint['curve']})")
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2)
        for col, mk, k in (("N", "s", "a"), ("D", "^", "b")):
            ax2.plot(env["C"], env[col], mk, color="k" if col == "N" else "C3", mfc="none", label=f"{col} on the envelope")
            parts = []
            if ef.get("available"):
                parts.append(f"envelope {ci(ef, k)}")
            if law.get("available"):
                N_opt, D_opt, _ = law_optimum(joint["fit"], grid, fr["kappa"], law["G"], law["a"], law["b"])
                ax2.plot(grid, N_opt if col == "N" else D_opt, color="k" if col == "N" else "C3", lw=1)
                parts.append(f"law {ci(law, k)}")
            ax2.plot([], [], " ", label=f"{col}_opt ~ C^{k}: " + ("; ".join(parts) or "not estimable"))
        ax2.set(xscale="log", yscale="log", xlabel="pretraining FLOPs (train_flops)", ylabel="N (parameters), D (images)",
                title="allocation along the frontier")
        ax2.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2))
        _tidy_log_x(ax)
        fig.tight_layout()
    return fig


def plot_frontier(joint: dict, out: str | Path) -> list[Path]:
    fig = frontier_figure(joint)
    return save(fig, out, "frontier") if fig is not None else []


def growth_exponent(resolution, values) -> float:
    """Slope of log(value) against log(token count) ~ log(resolution^2): 1 linear, 2 quadratic."""
    return float(np.polyfit(2 * np.log(np.asarray(resolution, float)), np.log(np.asarray(values, float)), 1)[0])


def _paper_highres(paper: pd.DataFrame | None) -> pd.DataFrame:
    paper = load_paper() if paper is None else paper
    return paper[paper["section"] == "highres"]


def _scan_note(rows: pd.DataFrame) -> str:
    """' [chunked scan]': the selective scan a RoMA model's rows ran with (benchmarks/highres.py `scan`)."""
    scans = sorted({str(x) for x in rows.get("scan", pd.Series(dtype=str)).dropna()} - {"none", ""})
    return f" [{'/'.join(scans)} scan]" if scans else ""


def plot_highres(df: pd.DataFrame, out: str | Path, paper: pd.DataFrame | None = None) -> list[Path]:
    """Peak memory and samples/s against resolution (log-log), one line per model, the fitted growth
    exponent vs token count in the legend, OOM marked on the x axis, the paper's numbers hollow."""
    need = ["model", "resolution", "peak_mem_mb", "samples_per_s"]
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise ValueError(f"high-res table: missing column(s) {missing}; it has {list(df.columns)}")
    df = df.copy()
    status = df["status"] if "status" in df else pd.Series("ok", index=df.index)
    oom = status.astype(str).str.upper().eq("OOM")
    ph = _paper_highres(paper)
    with plt.rc_context(STYLE):
        scans = _scan_note(df[df["model"].astype(str).str.startswith("roma")])
        fig, axes = plt.subplots(1, 2, figsize=(7.6, 3.75 if scans else 3.4))
        colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
        for ax, col, ylabel in ((axes[0], "peak_mem_mb", "peak memory (MB)"), (axes[1], "samples_per_s", "samples / s")):
            for i, (model, s) in enumerate(df.groupby("model", sort=True)):
                c = colors[i % len(colors)]
                ok = s[~oom[s.index] & (s[col] > 0)].sort_values("resolution")
                label = model + _scan_note(s)
                if len(ok) >= 2:
                    vals = ok[col] if col == "peak_mem_mb" else 1.0 / ok[col]
                    label += f" (growth {growth_exponent(ok['resolution'], vals):.2f})"
                ax.plot(ok["resolution"], ok[col], "o-", color=c, ms=4, label=label)
                bad = s[oom[s.index]]
                if len(bad):  # at the bottom edge of the panel, whatever its final y range
                    ax.plot(bad["resolution"], np.full(len(bad), 0.04), "x", color=c, ms=7, mew=1.5,
                            transform=ax.get_xaxis_transform(), label=f"{model} OOM")
            for j, (model, s) in enumerate(ph[ph["metric"] == col].groupby("method", sort=True)):
                rep = s[s["status"] == "reported"]
                oom_at = ", ".join(f"{x:g}" for x in s[s["status"] == "OOM"]["x_value"])
                ax.plot(rep["x_value"], rep["value"], "D", mfc="none", color=f"{0.15 + 0.35 * j:.2f}", ms=6,
                        label=f"paper {model}" + (f" (OOM at {oom_at})" if oom_at else ""))
            ax.set_xscale("log")
            ax.set_yscale("log")
            _tidy_log_x(ax)
            ax.set_xticks(sorted(set(df["resolution"].astype(int)) | set(ph["x_value"].dropna().astype(int))))
            ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
            ax.set_xlabel("resolution (px)")
            ax.set_ylabel(ylabel)
            ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.3))
        if scans:  # which path RoMA ran: mamba-ssm's fused kernels (cuda) or one of our scans
            fig.suptitle(f"RoMA-B ran with the {scans.strip(' []')}"
                         + ("" if "cuda" in scans else " (not mamba-ssm's fused kernels)"), fontsize=8)
        axes[0].set_title("memory (growth: slope vs tokens)", fontsize=8)
        axes[1].set_title("speed (growth of time/sample vs tokens)", fontsize=8)
        fig.tight_layout()
        return save(fig, out, "highres")
