"""Human-readable names: data and model sizes (62.5K, 4M) and run names, for tracking and analysis.

    format_size(62_500) -> "62.5K"      run_name(cfg) -> "roma_base-250K-seed0"

MLflow run names (roma.tracking), the launcher's tables and the analysis figures all use these,
so one run reads the same everywhere.
"""
from __future__ import annotations

from typing import Any

STANDARD_AXES = ("model.name", "data.subset", "train.seed")  # already in the name's first part


def format_size(n: float | None, digits: int = 4) -> str:
    """62500 -> 62.5K, 4000000 -> 4M, 8.6e7 -> 86M, 2e9 -> 2B, 312 -> 312, None -> all."""
    if n is None:
        return "all"
    for div, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= div:
            return f"{n / div:.{digits}g}{suffix}"
    return f"{n:.{digits}g}"


def _fmt_value(v: Any) -> str:
    if isinstance(v, (list, tuple)):
        return "+".join(_fmt_value(x) for x in v)
    return str(v)


def run_name(cfg) -> str:
    """`<model>-<data size>-seed<seed>`, then the run's label or its other sweep values."""
    name = f"{cfg.model.name}-{format_size(cfg.data.subset)}-seed{cfg.train.seed}"
    sweep = dict(cfg.sweep)
    if "label" in sweep:
        return f"{name}-{sweep['label']}"
    extra = [f"{k.rsplit('.', 1)[-1]}={_fmt_value(v)}" for k, v in cfg.sweep if k not in STANDARD_AXES]
    return "-".join([name, *extra])
