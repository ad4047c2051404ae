"""Every value of an evaluation's config, checked: the one list of rules for the probe and dense tasks.

roma.validation runs these with the rest of a run's config, before anything is launched, so a bad
evaluation value fails at `launch.py`, not after the pretraining it follows has been paid for; the
runners (roma.eval.classification.run_probe, roma.eval.dense.run_dense) run them again for direct
callers. Each problem is (field, message); the caller names where the field lives.
Enumerated values (protocol, scan, readout, task, precision) are checked against
roma.config.CHOICES by roma.validation; the file-system checks (roots exist) there too.
"""
from __future__ import annotations

import re

from roma.config import CHOICES, DENSE_TASK_KIND, DenseConfig, ProbeConfig

Problems = list[tuple[str, str]]
METRIC_PREFIX = re.compile(r"^[A-Za-z0-9_]+$")  # <dataset>_oa_tr50: an MLflow metric name, a folder name


def _fraction(out: Problems, field: str, value: float, lo_open: bool, hi_open: bool) -> None:
    lo_ok = value > 0 if lo_open else value >= 0
    hi_ok = value < 1 if hi_open else value <= 1
    if not (lo_ok and hi_ok):
        out.append((field, f"a fraction in {'(' if lo_open else '['}0, 1{')' if hi_open else ']'}, got {value}"))


def _at_least(out: Problems, cfg, fields: tuple[str, ...], low: int, why: str = "") -> None:
    for f in fields:
        if getattr(cfg, f) < low:
            out.append((f, f"must be >= {low}{why}, got {getattr(cfg, f)}"))


def _image_size(out: Problems, field: str, size: int, patch_size: int | None) -> None:
    if patch_size and size % patch_size:
        out.append((field, f"{size} px is not a multiple of the model's patch size {patch_size}"))


def probe_problems(p: ProbeConfig, patch_size: int | None = None) -> Problems:
    """What is wrong with a linear-probe config; patch_size: the pretrained model's (img_size must tile)."""
    out: Problems = []
    if not METRIC_PREFIX.match(p.dataset):
        out.append(("dataset", f"the metric prefix ({p.dataset}_oa_tr50) must be letters, digits and _, "
                    f"got {p.dataset!r}"))
    if not p.train_ratios:
        out.append(("train_ratios", "must not be empty (e.g. [0.2, 0.5])"))
    for ratio in p.train_ratios:
        if not 0 < ratio < 1:
            out.append(("train_ratios", f"a fraction in (0, 1), got {ratio}"))
    if not p.seeds:
        out.append(("seeds", "must not be empty (e.g. [0, 1, 2])"))
    elif len(set(p.seeds)) != len(p.seeds):
        out.append(("seeds", f"repeat a seed ({list(p.seeds)}): the mean and std would count a run twice"))
    if p.img_size < 0:
        out.append(("img_size", f"must be >= 0 (0: the pretraining resolution), got {p.img_size}"))
    elif p.img_size:
        _image_size(out, "img_size", p.img_size, patch_size)
    _at_least(out, p, ("epochs", "eval_every", "extract_batch_size"), 1)
    _at_least(out, p, ("batch_size",), 2, " (the head's BatchNorm needs two samples)")
    _at_least(out, p, ("max_per_class", "num_workers"), 0)
    if not p.blr > 0:
        out.append(("blr", f"must be positive, got {p.blr}"))
    for f in ("weight_decay", "warmup_epochs", "min_lr"):
        if getattr(p, f) < 0:
            out.append((f, f"must be >= 0, got {getattr(p, f)}"))
    _fraction(out, "label_smoothing", p.label_smoothing, lo_open=False, hi_open=True)
    _fraction(out, "val_fraction", p.val_fraction, lo_open=True, hi_open=True)  # lr / epochs are chosen on it
    if not p.lr_grid:
        out.append(("lr_grid", "must not be empty (the lr multipliers tried on the validation split)"))
    elif not all(m > 0 for m in p.lr_grid):
        out.append(("lr_grid", f"lr multipliers must be positive, got {list(p.lr_grid)}"))
    _fraction(out, "max_bad_fraction", p.max_bad_fraction, lo_open=False, hi_open=False)
    return out


def dense_problems(d: DenseConfig, patch_size: int | None = None) -> Problems:
    """What is wrong with a dense-task config; patch_size: the pretrained model's (sizes must tile)."""
    out: Problems = []
    for f in ("img_size", "crop_size"):
        if getattr(d, f) < 16:
            out.append((f, f"must be >= 16 px, got {getattr(d, f)}"))
    _image_size(out, "img_size", d.img_size, patch_size)
    _at_least(out, d, ("epochs", "eval_every"), 1)
    if d.max_steps is not None and d.max_steps < 1:
        out.append(("max_steps", f"must be >= 1 or null (null: epochs decide), got {d.max_steps}"))
    _at_least(out, d, ("batch_size",), 2, " (batch norm in the heads)")
    _at_least(out, d, ("num_workers", "slide_stride"), 0)
    if not d.lr > 0:
        out.append(("lr", f"must be positive, got {d.lr}"))
    if not 0 < d.layer_decay <= 1:
        out.append(("layer_decay", f"must be in (0, 1], got {d.layer_decay}"))
    for f in ("min_lr", "weight_decay", "warmup_epochs"):
        if getattr(d, f) < 0:
            out.append((f, f"must be >= 0, got {getattr(d, f)}"))
    _fraction(out, "val_fraction", d.val_fraction, lo_open=True, hi_open=True)  # the best epoch is chosen on it
    _fraction(out, "test_fraction", d.test_fraction, lo_open=False, hi_open=True)
    if d.val_fraction + d.test_fraction >= 1:
        out.append(("test_fraction", f"val_fraction + test_fraction = {d.val_fraction + d.test_fraction} "
                    "leaves nothing to train on"))
    if DENSE_TASK_KIND.get(d.task) == "cd" and len(d.decoder_channels) != 4:
        out.append(("decoder_channels", f"change detection's UNet has 4 blocks: give 4 widths, "
                    f"got {list(d.decoder_channels)}"))
    if not all(c >= 1 for c in d.decoder_channels):
        out.append(("decoder_channels", f"widths must be >= 1, got {list(d.decoder_channels)}"))
    _at_least(out, d, ("head_channels",), 2)
    return out


def choice_problems(cfg: ProbeConfig | DenseConfig) -> Problems:
    """Enumerated values outside roma.config.CHOICES (validation words these itself, with suggestions)."""
    section = "eval.probes" if isinstance(cfg, ProbeConfig) else "eval.dense"
    out: Problems = []
    for key, allowed in CHOICES.items():
        head, _, field = key.rpartition(".")
        if head == section and getattr(cfg, field) not in allowed:
            out.append((field, f"must be one of {list(allowed)}, got {getattr(cfg, field)!r}"))
    return out


def raise_problems(kind: str, problems: Problems) -> None:
    """ValueError naming every problem (a runner called directly, outside a validated RunConfig)."""
    if problems:
        raise ValueError(f"{kind}: " + "; ".join(f"{kind}.{field}: {msg}" for field, msg in problems))
