"""What the x axes of the scaling figures measure, and where ours and the paper's points sit on them.

D (data axis, `--data-axis`):
  data_size    unique pretraining images (the subset size): what the paper's data-scaling figure uses
               (62.5K / 250K / 1M / 4M), hence the default
  images_seen  images drawn in pretraining (epochs x data size, or fewer for a shortened run); the
               paper does not give it per point, so its points are left out of that figure
Compute (`fit_scaling.py --x`, both axes at once: each curve keeps its model or its data fixed as above
and is placed at the compute its runs used; the paper's points, which give no compute, are left out):
  train_flops  pretraining FLOPs, 3 x forward FLOPs per image x images seen (logged by roma.run)
  device_hours measured wall-clock hours x devices of the pretraining
N (model axis, `--param-convention`):
  ours         encoder parameters of the released pretraining configs, which our models match
               (Tiny 5.22M, Small 20.28M, Base 79.93M, Large 282.31M): the default
  paper        the labels of the paper's model-scaling figure (36M / 54M / 86M / 300M), which no
               released config has; our runs are placed at the label of their model size
The paper's own points stay at the paper's x (paper_results.csv `x_value`, described by `x_source`:
its figure's labels or axis) under either convention, and the legend says so.
"""
from __future__ import annotations

import pandas as pd

DATA_AXES = ("data_size", "images_seen")
COMPUTE_AXES = ("train_flops", "device_hours")
PARAM_CONVENTIONS = ("ours", "paper")
# The paper's model-scaling points (paper_results.csv, section model_scaling) and our registered sizes.
PAPER_MODELS = {"RoMA-T": "roma_tiny", "RoMA-S": "roma_small", "RoMA-B": "roma_base", "RoMA-L": "roma_large"}
XLABELS = {"data_size": "pretraining images (unique)", "images_seen": "images seen in pretraining",
           "train_flops": "pretraining FLOPs (3 x forward x images seen)",
           "device_hours": "pretraining device-hours (measured)",
           "ours": "encoder parameters (released configs)", "paper": "parameters (the paper's axis labels)"}


class AxisError(ValueError):
    """A run or a paper point that has no place on the chosen axis: the message names it."""


def paper_labels(paper: pd.DataFrame) -> dict[str, float]:
    """Model name -> the parameter count the paper's model-scaling figure labels it with."""
    sec = paper[(paper["section"] == "model_scaling") & paper["method"].isin(PAPER_MODELS)]
    return {PAPER_MODELS[m]: float(x) for m, x in sec.groupby("method")["x_value"].first().items()}


def param_x(df: pd.DataFrame, convention: str, paper: pd.DataFrame) -> pd.Series:
    """Our runs' model-axis positions: the logged `param_count`, or the paper's label of their model."""
    if convention == "ours":
        return df["param_count"].astype(float)
    if convention != "paper":
        raise AxisError(f"unknown parameter convention {convention!r}; choose from {PARAM_CONVENTIONS}")
    labels = paper_labels(paper)
    unknown = sorted(set(df["model"]) - set(labels))
    if unknown:
        raise AxisError(f"--param-convention paper places runs at the paper's label of their model "
                        f"({', '.join(f'{m} {x / 1e6:g}M' for m, x in labels.items())}); model(s) {unknown} "
                        f"have none: use --param-convention ours")
    return df["model"].map(labels).astype(float)


def data_x(df: pd.DataFrame, data_axis: str) -> pd.Series:
    """Our runs' data-axis positions (or, for a compute axis, their compute); every run must have
    logged the chosen quantity."""
    if data_axis not in DATA_AXES + COMPUTE_AXES:
        raise AxisError(f"unknown data axis {data_axis!r}; choose from {DATA_AXES + COMPUTE_AXES}")
    col = df[data_axis] if data_axis in df else pd.Series(float("nan"), index=df.index)
    missing = col.isna() | (col <= 0)
    if missing.any():
        names = df.loc[missing, "run_name"].tolist() if "run_name" in df else df.index[missing].tolist()
        raise AxisError(f"--data-axis {data_axis}: {int(missing.sum())} of {len(df)} runs did not log a positive "
                        f"{data_axis!r}: {names[:10]}" + (" (runs from before it was logged: use --data-axis "
                                                          "data_size)" if data_axis == "images_seen" else "")
                        + (" (runs from before per-run compute was logged)" if data_axis in COMPUTE_AXES else ""))
    return col.astype(float)
