"""Run tables: finished MLflow runs or a CSV file -> one pandas row per run, seeds grouped.

The names are the tracking contract of docs/architecture.md (logged under grouped keys, train/...,
val/..., eval/..., read back through roma.metric_names, which also reads older stores' plain keys): params `model.name`, `param_count`,
`data_size` (or `data.subset`), `train.seed` and the ablation switches; `images_seen` (a param or a
metric, optional); single-value metrics
`aid_oa_tr50`, `aid_oa_tr20`, `ucm_oa_tr50`, `oscd_f1`, `spacenet_mf1` (percent), `val_loss` (held-out)
and `final_loss` (last batch); `train_flops` and `device_hours` (optional).
"""
from __future__ import annotations

import math
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from roma.metric_names import plain_metrics  # MLflow's grouped keys (train/, val/, eval/) -> these names
from roma.naming import format_size as fmt_size  # one size format for run names, tables, figures

PERCENT_METRICS = ("aid_oa_tr50", "aid_oa_tr20", "ucm_oa_tr50", "oscd_f1", "spacenet_mf1")
# The pretraining losses on the run's fixed held-out set: val_loss_token (the token loss alone: one
# target for every ablation variant), val_loss (the training objective: + msp.weight x the MSP block
# loss for MSP runs); final_loss, the loss of the last training batch (kept for older runs). The joint
# law takes the first one the runs logged.
LOSS_METRICS = ("val_loss_token", "val_loss", "final_loss")
METRICS = PERCENT_METRICS + LOSS_METRICS
LABELS = {"aid_oa_tr50": "AID OA (TR 50%)", "aid_oa_tr20": "AID OA (TR 20%)", "ucm_oa_tr50": "UCM OA (TR 50%)",
          "oscd_f1": "OSCD F1", "spacenet_mf1": "SpaceNet mF1", "val_loss_token": "held-out token loss", "val_loss": "held-out pretraining loss",
          "final_loss": "last training batch loss"}
# Per-run compute, logged by roma.run (optional: older runs lack it): the x of `fit_scaling.py --x`.
COMPUTE_COLUMNS = ("train_flops", "device_hours")
ABLATION_PARAMS = ("ares.enabled", "msp.enabled", "ares.descriptor", "msp.scales", "msp.weight")
# A fixed optimizer-step budget (train.steps; the micro study's fixed-steps control) is its own setting:
# its runs are never pooled with the epoch axis's in a curve, a joint fit or an ablation row.
SCHEDULE_PARAMS = ("train.steps",)
SIZE_COLUMNS = ("param_count", "data_size")


class RunTableError(ValueError):
    """Bad run table: the message names the file or run and the column or parameter."""


def error_like(metric: str, values):
    """The quantity a saturating/power law describes: 1 - accuracy (percent metrics) or the loss itself."""
    v = np.asarray(values, float)
    return 1.0 - v / 100.0 if metric in PERCENT_METRICS else v


def from_error_like(metric: str, err):
    e = np.asarray(err, float)
    return 100.0 * (1.0 - e) if metric in PERCENT_METRICS else e


def parse_size(value) -> float:
    """'250K', '4M', '1.5e6', 250000, 'None' -> float (NaN when absent)."""
    if value is None:
        return math.nan
    if isinstance(value, (int, float)):
        return float(value)
    s = str(value).strip()
    if s in ("", "None", "null", "nan"):
        return math.nan
    m = re.fullmatch(r"([0-9.eE+-]+)\s*([kKmMbBgG]?)", s)
    if not m:
        raise ValueError(f"not a size: {value!r}")
    mult = {"": 1, "k": 1e3, "m": 1e6, "b": 1e9, "g": 1e9}[m.group(2).lower()]
    return float(m.group(1)) * mult


def read_table(path: str | Path, columns: list[str], numeric: list[str] = ()) -> pd.DataFrame:
    """A CSV table with at least `columns`, the `numeric` ones as floats. Every malformed file (absent,
    empty, header only, not UTF-8, ragged, a non-numeric value) is a RunTableError naming the file, and
    the column and line where there is one."""
    path = Path(path)
    if not path.is_file():
        raise RunTableError(f"{path}: no such file")
    try:
        df = pd.read_csv(path, encoding="utf-8")
    except pd.errors.EmptyDataError:
        raise RunTableError(f"{path}: the file is empty (expected a header line with columns {columns})") from None
    except UnicodeDecodeError as err:
        raise RunTableError(f"{path}: not UTF-8 text ({err.reason}, byte "
                            f"{err.object[err.start:err.start + 1]!r}); save it as UTF-8") from None
    except pd.errors.ParserError as err:
        raise RunTableError(f"{path}: not a CSV table: {str(err).strip()}") from None
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise RunTableError(f"{path}: missing column(s) {missing}; the file has {list(df.columns)}")
    if df.empty:
        raise RunTableError(f"{path}: a header but no rows (columns {list(df.columns)})")
    labels = row_labels(df)
    for col in numeric:
        values = pd.to_numeric(df[col], errors="coerce")
        bad = values.isna() & df[col].notna()
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise RunTableError(f"{path}: column {col!r}: {df[col].iloc[i]!r} at {labels[i]} is not a number")
        df[col] = values.astype(float)
    return df


def row_labels(df: pd.DataFrame) -> list[str]:
    """How to name a row in an error: its run name when the table has one, else its line number."""
    for col in ("run_name", "run", "run_id"):
        if col in df.columns:
            return [f"run {v!r}" for v in df[col]]
    return [f"row {i + 2} (file line)" for i in range(len(df))]  # +1 header, +1 one-based


def load_mlflow(experiment: str, tracking_uri: str, allow_missing: bool = False) -> pd.DataFrame:
    """Finished runs of one experiment -> columns run_id, run_name, model, param_count, data_size,
    seed, the ablation switches, the metrics, and the `sweep.*` tags joined in `sweep`."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        names = [e.name for e in client.search_experiments()]
        raise RunTableError(f"experiment {experiment!r} not found at {tracking_uri}; it has {names}")
    runs, token = [], None
    while True:
        page = client.search_runs([exp.experiment_id], "attributes.status = 'FINISHED'", max_results=1000,
                                  page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            break
    if not runs:
        raise RunTableError(f"experiment {experiment!r} at {tracking_uri} has no finished runs")
    rows = []
    for r in runs:
        p, m, tags = r.data.params, plain_metrics(r.data.metrics), r.data.tags  # train/..., eval/... or older plain keys
        name = r.info.run_name or r.info.run_id
        where = f"run {name!r} ({r.info.run_id})"
        row = {"run_id": r.info.run_id, "run_name": name}
        row["model"] = p.get("model.name") or p.get("model")
        if row["model"] is None:
            raise RunTableError(f"{where}: parameter 'model.name' is missing")
        for col, keys in (("param_count", ("param_count",)), ("data_size", ("data_size", "data.subset"))):
            row[col] = math.nan
            for k in keys:  # the first of the keys that holds a size (data.subset may be 'None': all images)
                try:
                    row[col] = parse_size(p.get(k))
                except ValueError as err:
                    raise RunTableError(f"{where}: parameter {k!r}: {err}") from None
                if not math.isnan(row[col]):
                    break
            if math.isnan(row[col]):
                raise RunTableError(f"{where}: parameter {' or '.join(map(repr, keys))} is missing or None")
            if row[col] <= 0:
                raise RunTableError(f"{where}: parameter {col!r} must be positive, got {row[col]:g}")
        row["images_seen"] = math.nan  # optional (older runs lack it); --data-axis images_seen needs it
        for source in (m, p):
            try:
                row["images_seen"] = parse_size(source.get("images_seen"))
            except ValueError as err:
                raise RunTableError(f"{where}: 'images_seen': {err}") from None
            if not math.isnan(row["images_seen"]):
                break
        for col in COMPUTE_COLUMNS:
            row[col] = m.get(col, math.nan)
        row["seed"] = int(float(p.get("train.seed", 0)))
        for k in ABLATION_PARAMS + SCHEDULE_PARAMS:
            row[k] = p.get(k)
        for k in METRICS:
            row[k] = m.get(k, math.nan)
        row["sweep"] = ",".join(sorted(k[len("sweep."):] for k in tags if k.startswith("sweep.")))
        rows.append(row)
    df = pd.DataFrame(rows)
    return check_metrics(df, allow_missing)


RUN_COLUMNS = ("run_name", "model", "param_count", "data_size")


def load_runs(path: str | Path, allow_missing: bool = False) -> pd.DataFrame:
    """A run table written by an earlier analysis (its runs.csv, e.g. docs/results/micro_study_runs.csv):
    the rows load_mlflow returns, so every fit, figure and table can be remade without the store."""
    numeric = [c for c in SIZE_COLUMNS + ("images_seen", "seed") + COMPUTE_COLUMNS + METRICS]
    head = read_table(path, list(RUN_COLUMNS))
    df = read_table(path, list(RUN_COLUMNS), numeric=[c for c in numeric if c in head.columns])
    for col in SIZE_COLUMNS:
        bad = df[~(df[col] > 0)]
        if len(bad):
            raise RunTableError(f"{path}: column {col!r} must be positive; {bad['run_name'].iloc[0]!r} has "
                                f"{bad[col].iloc[0]!r}")
    if "seed" not in df:
        df["seed"] = 0
    return check_metrics(df, allow_missing)


def check_metrics(df: pd.DataFrame, allow_missing: bool = False) -> pd.DataFrame:
    """A metric logged as +-inf (a diverged run) is an error naming the run and the metric, whatever
    allow_missing says: it is no measurement and no law may be fitted through it. A metric some runs
    have and others lack (or logged as NaN) is an error naming those runs; with allow_missing those
    runs are kept and the metric is dropped for them (a warning on stderr)."""
    names_all = df["run_name"].tolist() if "run_name" in df else [f"row {i}" for i in df.index]
    for k in METRICS + COMPUTE_COLUMNS + SIZE_COLUMNS:
        if k in df.columns:
            vals = pd.to_numeric(df[k], errors="coerce").to_numpy(float)
            inf = np.flatnonzero(np.isinf(vals))
            if len(inf):
                shown = ", ".join(f"{names_all[i]!r} ({k} = {vals[i]:g})" for i in inf[:10])
                raise RunTableError(f"{k!r} is not finite in {len(inf)} of {len(df)} runs: {shown}; a diverged "
                                    f"or broken run is no measurement: fix or delete it before fitting")
    for k in METRICS:
        if k not in df.columns:
            df[k] = math.nan
        bad = df[k].isna()
        if bad.any() and not bad.all():
            names = df.loc[bad, "run_name"].tolist() if "run_name" in df else df.index[bad].tolist()
            msg = f"metric {k!r} is missing or NaN in {len(names)} of {len(df)} runs: {names[:10]}"
            if not allow_missing:
                raise RunTableError(msg + " (pass --allow-missing to fit without them)")
            print(f"warning: {msg}; those runs are left out of the {k} fits", file=sys.stderr)
    return df


def available_metrics(df: pd.DataFrame) -> list[str]:
    return [k for k in METRICS if k in df.columns and df[k].notna().any()]


def _switch_on(v) -> bool:
    """A logged boolean switch (params come back as strings); unlogged means the config default, on."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return True
    return str(v).lower() in ("true", "1", "yes")


def ablation_labels(df: pd.DataFrame) -> list[str]:
    """Per run: 'ARM baseline', '+ARES', '+MSP' or '+ARES+MSP', plus the options (descriptor, scales,
    weight) that vary across the table, e.g. '+ARES+MSP (scales=[2, 4])', and a fixed step budget
    ('+ARES+MSP (fixed steps=312)')."""
    varying = [k for k in ABLATION_PARAMS[2:] if k in df.columns and df[k].astype(str).nunique() > 1]
    labels = []
    for _, row in df.iterrows():
        ares, msp = _switch_on(row.get("ares.enabled")), _switch_on(row.get("msp.enabled"))
        label = "ARM baseline" if not (ares or msp) else ("+ARES" if ares else "") + ("+MSP" if msp else "")
        extra = [f"{k.split('.')[1]}={row[k]}" for k in varying
                 if (k.startswith("ares") and ares) or (k.startswith("msp") and msp)]
        steps = fixed_steps(row.get("train.steps"))
        if steps is not None:
            extra.append(f"fixed steps={steps}")
        labels.append(label + (f" ({', '.join(extra)})" if extra else ""))
    return labels


def fixed_steps(v) -> int | None:
    """train.steps of a run (None: the epoch schedule); MLflow params are strings ('None' when unset)."""
    if v is None or (isinstance(v, float) and math.isnan(v)) or str(v) in ("", "None", "none", "null"):
        return None
    return int(float(v))


def group_seeds(df: pd.DataFrame, keys: list[str], metrics: list[str] | None = None) -> pd.DataFrame:
    """One row per `keys` combination: <metric>_mean, <metric>_std (0 for one seed), <metric>_n."""
    metrics = metrics or available_metrics(df)
    g = df.groupby(keys, dropna=False, sort=True)
    out = g.size().rename("n_runs").reset_index()
    for k in metrics:
        agg = g[k].agg(["mean", "std", "count"]).reset_index(drop=True)
        out[f"{k}_mean"] = agg["mean"].to_numpy()
        out[f"{k}_std"] = agg["std"].fillna(0.0).to_numpy()
        out[f"{k}_n"] = agg["count"].to_numpy()
    return out


def scaling_curves(df: pd.DataFrame, data_col: str = "data_size",
                   param_col: str = "param_count") -> dict[str, list[tuple[str, pd.DataFrame]]]:
    """Split runs into data-scaling curves (one model, several values of `data_col`) and model-scaling
    curves (one pretraining set, several values of `param_col`), each with the ablation switches fixed."""
    df = df.copy()
    df["ablation"] = ablation_labels(df)
    if df["ablation"].nunique() == 1:  # one setting throughout: no need to say it in every label
        df["ablation"] = ""
    curves: dict[str, list] = {"data": [], "model": []}
    for (model, abl), sub in df.groupby(["model", "ablation"], sort=True):
        if sub[data_col].nunique() >= 2:
            curves["data"].append((f"{model}{' ' + abl if abl else ''}", sub))
    for (size, abl), sub in df.groupby(["data_size", "ablation"], sort=True):
        if sub[param_col].nunique() >= 2:
            curves["model"].append((f"{fmt_size(size)} images{' ' + abl if abl else ''}", sub))
    return curves


def load_paper(path: str | Path | None = None) -> pd.DataFrame:
    """The paper's reported numbers (analysis/paper_results.csv; `source` says where each is from)."""
    path = Path(path) if path else Path(__file__).with_name("paper_results.csv")
    return read_table(path, ["section", "method", "x_name", "x_value", "metric", "value", "status", "approx", "source"])
