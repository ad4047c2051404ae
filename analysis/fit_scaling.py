"""Fit scaling laws with honest uncertainty; draw the paper's figures and tables.

From a table (any source), writing OUT/fit.json:
    python analysis/fit_scaling.py --csv FILE --form chinchilla --n COL --d COL --y COL \\
        [--exclude-top K] [--bootstrap B] [--seed S] --out OUT
    python analysis/fit_scaling.py --csv FILE [--form auto|power|saturating3|saturating] --x COL --y COL [--bootstrap B] --out OUT
  y is fitted as given (pass an error or a loss, not an accuracy, to a saturating law). --form auto (the
  default) fits every form, tests each for lack of fit against the per-seed spread and picks by AICc
  and the extrapolation check (analysis/selection.py); fit.json "selection" holds the comparison.

From a spec's finished runs, in one command (its MLflow store found as the launcher finds it;
results in outputs/<spec>/analysis unless --out; `roma-fit` is the same command):
    python analysis/fit_scaling.py scaling_data            # or --spec scaling_data
From finished MLflow runs (params model.name, param_count, data_size; metrics aid_oa_tr50, ...):
    python analysis/fit_scaling.py --experiment scaling_data --tracking-uri sqlite:///outputs/scaling_data/mlflow.db \\
        --out outputs/analysis/scaling_data [--form auto|power|saturating3|saturating] [--format markdown|latex|csv]
        [--data-axis data_size|images_seen] [--param-convention ours|paper] [--x train_flops|device_hours]
  --runs RUNS.csv instead of --experiment/--tracking-uri: the same from a run table an earlier analysis wrote.
  --x train_flops (or device_hours) fits and draws every curve against the compute its runs used.
  Every law is also checked by extrapolation: refitted without its largest size, which it then
  predicts with a bootstrap 95% interval (fits.json "holdout"; the fits table; a hollow marker).
  -> OUT/runs.csv, fits.json, {data,model}_scaling.{png,pdf} (one panel per metric), ablation.{png,pdf},
     frontier.{png,pdf} (the joint law's runs against train_flops),
     tables/*.{md,tex,csv}; the report (fits, the paper's main table with ours, ours vs paper,
     ablation) on stdout, notes (panels left out, ...) on stderr.

fit.json: {"form", "params", "ci95": {name: [lo, hi]}, "n_points", "objective", "loo", "holdout", ...};
chinchilla params E, A, B, alpha, beta; power a, b (y = a x^b); saturating3 E, A, b (y = E + A x^-b);
saturating a, b, c, d (y = a (x+d)^-b + c).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from analysis.axes import COMPUTE_AXES, DATA_AXES, PARAM_CONVENTIONS, AxisError  # noqa: E402
from analysis.fits import FitInputError, fit_scaling  # noqa: E402
from analysis.runs import RunTableError, read_table, row_labels  # noqa: E402
from analysis.tables import FORMATS, params_table, render  # noqa: E402


def write_json(path: Path, obj) -> None:
    """Atomic JSON write (temp file + rename); NaN becomes null so that any JSON reader accepts it."""
    def clean(o):
        if isinstance(o, float) and not math.isfinite(o):
            return None
        if isinstance(o, dict):
            return {k: clean(v) for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            return [clean(v) for v in o]
        if isinstance(o, np.generic):
            return clean(o.item())
        return o

    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(clean(obj), indent=1))
    os.replace(tmp, path)


def write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def run_csv(args) -> dict:
    joint = args.form == "chinchilla" or (args.form == "auto" and args.n and args.d)
    if joint:
        if not (args.n and args.d and args.y):
            raise SystemExit(f"--form {args.form} with a joint law needs --n COL --d COL --y COL")
        x_cols = [args.n, args.d]
    else:
        if not (args.x and args.y):
            raise SystemExit(f"--form {args.form} needs --x COL --y COL (or --n COL --d COL --y COL: the joint law)")
        x_cols = [args.x]
    df = read_table(args.csv, x_cols + [args.y], numeric=x_cols + [args.y])
    X = df[x_cols].to_numpy(float)
    try:
        res = fit_scaling(args.form, X, df[args.y].to_numpy(float), x_names=tuple(x_cols), y_name=args.y,
                          labels=row_labels(df), bootstrap_b=args.bootstrap, seed=args.seed, exclude_top=args.exclude_top)
    except FitInputError as err:
        raise FitInputError(f"{args.csv}: {err}") from None
    for w in res.warnings:
        print(f"warning: {args.csv}: {w}", file=sys.stderr)
    out = res.to_json()
    out.update({"csv": str(args.csv), "y": args.y, "exclude_top": args.exclude_top})
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "fit.json", out)
    lines = [render(params_table(res), args.format, caption=f"{res.form} fit of {args.y} on {', '.join(x_cols)} "
                    f"({res.n_points} points, objective {res.objective:.6g}, bootstrap B={args.bootstrap})")]
    if args.format != "csv":
        from analysis.tables import selection_cells

        lines += [f"{k}: {v}" for k, v in selection_cells(res).items()]
    for name, d in (("leave-one-out", res.loo), ("hold-largest-out", res.holdout)):
        if args.format != "csv":
            lines.append(f"{name}: " + (f"mean |rel. err| {d['mean_abs_rel_err']:.4g}, max {d['max_abs_rel_err']:.4g}, "
                                       f"at the largest {d.get('rel_err', d['max_abs_rel_err']):.4g} (seed means)" if d.get("available") else d.get("reason", "n/a")))
    print("\n".join(lines))
    return out


def spec_store(spec: str, sets: list[str]) -> tuple[str, str, Path]:
    """(experiment, tracking URI, default output folder) of a spec's runs: the store its launch wrote,
    by the launcher's own rule (roma.tracking.store_of); an error when there is none yet."""
    from roma.spec import load_spec, parse_set
    from roma.tracking import sqlite_path, store_of
    from roma.validation import ConfigError

    try:
        runs = load_spec(spec, parse_set(sets), check_data=False, require_env=False).runs
        uri, experiment = store_of(runs)
    except (ConfigError, ValueError) as err:
        raise SystemExit(f"error: spec {spec}: {err}") from None
    store = sqlite_path(uri)
    if store is not None and not store.is_file():
        raise SystemExit(f"error: spec {spec}: no MLflow store at {store} yet: launch it first "
                         f"(python experiments/launch.py {spec})")
    out = (store.parent if store is not None else Path(runs[0].output_root) / experiment) / "analysis"
    return experiment, uri, out


def run_mlflow(args) -> dict:
    from analysis.runs import load_mlflow
    from roma.tracking import require_store

    uri = args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        raise SystemExit("--experiment needs --tracking-uri (or MLFLOW_TRACKING_URI)")
    require_store(uri)  # roma.tracking: a mistyped sqlite:/// path is an error, never a new empty store
    study_form(args)
    return run_study(load_mlflow(args.experiment, uri, args.allow_missing), args)


def run_table(args) -> dict:
    """--runs RUNS.csv: a run table (the runs.csv an analysis writes, or one with its columns built
    elsewhere) -> the same fits, figures and tables as from the MLflow store."""
    from analysis.runs import load_runs

    study_form(args)
    return run_study(load_runs(args.runs, args.allow_missing), args)


def study_form(args) -> str:
    if args.form == "chinchilla":
        raise SystemExit("--form chinchilla is for --csv; from runs the joint law is fitted on val_loss_token (else "
                         "val_loss, final_loss) whenever the runs of one setting vary both param_count and data_size")
    return args.form or "auto"


def run_study(df, args) -> dict:
    """The runs of a study (one row per run) -> OUT/runs.csv, fits.json, figures, tables, the report."""
    from analysis import axes, figures, study, tables
    from analysis.runs import load_paper

    form = study_form(args)
    paper = load_paper(args.paper)
    # Where each run sits on the data and model axes (analysis.axes): the columns study.AXES fits on.
    if args.x and args.x not in COMPUTE_AXES:
        raise SystemExit(f"--x {args.x}: from MLflow, --x is a compute axis, one of {COMPUTE_AXES}")
    if args.x:  # both kinds of curve placed at their compute; the paper gives none: its points stay out
        df[study.AXES["data"]] = df[study.AXES["model"]] = axes.data_x(df, args.x)
        args.no_paper = True
    else:
        df[study.AXES["data"]] = axes.data_x(df, args.data_axis)
        df[study.AXES["model"]] = axes.param_x(df, args.param_convention, paper)
    args.out.mkdir(parents=True, exist_ok=True)
    tmp = args.out / "runs.csv.tmp"
    df.to_csv(tmp, index=False)
    os.replace(tmp, args.out / "runs.csv")

    fits = study.fit_ours(df, form, args.bootstrap, args.seed)
    if not args.no_paper:
        fits += study.fit_paper(paper, form, args.bootstrap, args.seed, args.data_axis)
    n_name = "param_count" if args.param_convention == "ours" else "param_count (paper's labels)"
    joint = None if args.x else study.fit_joint(df, args.bootstrap, args.seed, args.exclude_top, (n_name, args.data_axis))
    all_fits = study.fitted(fits) + ([joint] if joint else [])
    notes = {"data": "", "model": ""}
    if not args.no_paper and args.data_axis != "data_size":
        notes["data"] = "the paper's points are left out: its figure counts unique images, not images seen"
    xlabels = ({"data": axes.XLABELS[args.x], "model": axes.XLABELS[args.x]} if args.x else
               {"data": axes.XLABELS[args.data_axis], "model": axes.XLABELS[args.param_convention]})
    drawn = {}
    for axis in ("data", "model"):
        drawn[axis] = figures.plot_scaling(fits, axis, args.out, xlabels[axis], notes[axis])
        if not drawn[axis]:
            notes[axis] = "no figure: no curve of ours on this axis"
        else:
            left_out = figures.scaling_panels([f for f in fits if f["axis"] == axis], axis)[1]
            if left_out:
                notes[axis] = "; ".join(filter(None, [notes[axis], "panels left out (no curve of ours, not in the "
                                                      "paper's figure): " + ", ".join(left_out)]))

    report = {"fits": tables.fits_table(all_fits),
              "main table (the paper's, ours last)": tables.main_table(df, paper),
              "ours vs paper (RoMA-B)": tables.ours_vs_paper(df, paper)}
    if joint and joint.get("frontier"):
        report["frontier (compute-optimal allocation)"] = tables.frontier_table(joint["frontier"])
        figures.plot_frontier(joint, args.out)
    abl = tables.ablation_table(df, paper)
    for w in abl.attrs.get("warnings", []):
        print(f"warning: {w}", file=sys.stderr)
    if len(abl) >= 2:  # an ablation needs at least two settings of one model and data size
        report["ablation"] = abl
        figures.plot_ablation(abl, args.out)
    (args.out / "tables").mkdir(exist_ok=True)
    for name, t in report.items():
        stem = name.split(" ")[0]
        for fmt, ext in (("markdown", "md"), ("latex", "tex"), ("csv", "csv")):
            write_text(args.out / "tables" / f"{stem}.{ext}", render(t, fmt, caption=name))
    axes_info = ({"data_axis": args.x, "param_convention": args.x} if args.x else
                 {"data_axis": args.data_axis, "param_convention": args.param_convention})
    write_json(args.out / "fits.json", [{k: v for k, v in f.items() if k not in ("fit", "points")} | axes_info
                                        | f["fit"].to_json() for f in all_fits])
    print("\n".join(render(t, args.format, caption=name) for name, t in report.items()))
    for axis, note in notes.items():
        if note:
            print(f"note: {axis} scaling: {note}", file=sys.stderr)
    return {"fits": all_fits, "tables": report, "figures": drawn, "notes": notes}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("spec", nargs="?", help="a spec (name or YAML path): its runs' MLflow store, found as the launcher "
                   "finds it (outputs/<spec>/mlflow.db by default); the same as --spec")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--spec", dest="spec_opt", metavar="SPEC", help="the same as the positional SPEC")
    src.add_argument("--csv", type=Path, help="a table with one row per run: with --form, one law on its columns; "
                     "without, a run table (columns of runs.csv) -> the same fits, figures and tables as from MLflow")
    src.add_argument("--experiment", help="an MLflow experiment name (finished runs are read)")
    src.add_argument("--runs", type=Path, help="a run table written by an earlier analysis (its runs.csv): the same "
                                               "analysis as --experiment, without the MLflow store")
    p.add_argument("--set", dest="sets", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                   help="with SPEC: the --set of its launch that moves its store (e.g. output_root=/scratch/out)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI, e.g. sqlite:///outputs/x/mlflow.db")
    p.add_argument("--form", choices=("auto", "power", "saturating3", "saturating", "chinchilla"), default="auto",
                   help="the law; auto (default) chooses by evidence: lack of fit, AICc, the extrapolation check "
                        "(analysis/selection.py); a named form is forced and the comparison still reported")
    p.add_argument("--n", help="CSV column of parameter counts (chinchilla)")
    p.add_argument("--d", help="CSV column of data sizes (chinchilla)")
    p.add_argument("--x", help="CSV: the column of sizes (power, saturating); MLflow: a compute axis, "
                              f"one of {', '.join(COMPUTE_AXES)}, for every curve")
    p.add_argument("--y", help="CSV column of the fitted quantity (loss, error)")
    p.add_argument("--exclude-top", type=int, default=0, metavar="K",
                   help="fit without the points at the K largest sizes (N*D for chinchilla; all their seeds) and "
                        "report how well they are predicted")
    p.add_argument("--bootstrap", type=int, default=1000, metavar="B", help="bootstrap resamples for the CIs (0: none)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, help="output folder (default with SPEC: analysis/ beside its store, "
                   "outputs/<spec>/analysis; required otherwise)")
    p.add_argument("--format", choices=FORMATS, default="markdown", help="the report on stdout")
    p.add_argument("--paper", type=Path, default=None, help="the paper's numbers (default analysis/paper_results.csv)")
    p.add_argument("--no-paper", action="store_true", help="do not fit or draw the paper's points")
    p.add_argument("--allow-missing", action="store_true", help="keep runs that lack a metric other runs have")
    p.add_argument("--data-axis", choices=DATA_AXES, default="data_size",
                   help="D of the data-scaling figure and the joint fit: unique pretraining images (data_size, "
                        "the paper's figure) or images_seen (epochs x images)")
    p.add_argument("--param-convention", choices=PARAM_CONVENTIONS, default="ours",
                   help="N of the model-scaling figure: our (= the released configs') encoder parameters, "
                        "T/S/B/L 5.22/20.28/79.93/282.31M, or the paper's axis labels 36/54/86/300M")
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Exactly one source: SPEC (positional or --spec), --csv or --experiment; a spec's store and
    default --out are resolved here."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.spec and args.spec_opt:
        parser.error("give the spec once: SPEC or --spec SPEC")
    args.spec = args.spec or args.spec_opt
    given = [name for name, v in (("SPEC", args.spec), ("--csv", args.csv), ("--experiment", args.experiment),
                                  ("--runs", args.runs)) if v]
    if len(given) != 1:
        parser.error("one source: a SPEC, --csv FILE, --runs RUNS.csv or --experiment NAME"
                     + (f" (got {' and '.join(given)})" if given else ""))
    if args.sets and not args.spec:
        parser.error("--set needs a SPEC")
    if args.spec and args.tracking_uri:
        parser.error("a SPEC names its own store: drop --tracking-uri (or use --experiment with it)")
    if args.exclude_top < 0 or args.bootstrap < 0:
        parser.error("--exclude-top and --bootstrap must be >= 0")
    if args.spec:
        args.experiment, args.tracking_uri, out = spec_store(args.spec, args.sets)
        args.out = args.out or out
        print(f"spec {args.spec}: experiment {args.experiment} in {args.tracking_uri}; results in {args.out}",
              file=sys.stderr)
    elif args.out is None:
        parser.error("--out is required with --csv, --runs and --experiment")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    try:
        if args.csv:
            return run_csv(args)
        return run_table(args) if args.runs else run_mlflow(args)
    except (FitInputError, RunTableError, AxisError) as err:
        raise SystemExit(f"error: {err}") from None


def cli(argv: list[str] | None = None) -> int:
    """The `roma-fit` console entry point (and this script's): main's results stay in its files."""
    main(argv)
    return 0


if __name__ == "__main__":
    sys.exit(cli())
