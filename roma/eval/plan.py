"""The evaluations a RunConfig names: their folder names, the metric keys each logs, their data.

One place for these facts: roma.run runs the evaluations by these names, roma.validation refuses
configs whose evaluations would log the same metric key, and the launcher plans and reports them.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from roma.config import EVAL_DATA_ENV, RunConfig, to_plain


def evaluations(cfg: RunConfig) -> list[tuple[str, str, Any, bool]]:
    """(name, kind, sub-config, random_init) for every evaluation in cfg.eval, names unique."""
    out: list[tuple[str, str, Any, bool]] = []
    for p in cfg.eval.probes:
        tag = f"probe_{p.dataset}_{p.protocol}_{p.scan}_{p.readout}"
        out.append((tag, "probe", p, False))
        if cfg.eval.random_init_baseline:
            out.append((f"random_{tag}", "probe", p, True))
    for d in cfg.eval.dense:
        out.append((f"dense_{d.task}_{d.scan}", "dense", d, False))
    # two evaluations of one kind that differ elsewhere: tell them apart by their training ratios
    # (probe_aid_full_v3_cls_tr20 / _tr50), else by a hash of their config, so each keeps its own
    # results folder across relaunches
    for tell in (_ratios_tag, _short_hash):
        names = [n for n, *_ in out]
        out = [(f"{n}_{tell(sub)}" if names.count(n) > 1 else n, kind, sub, rand) for n, kind, sub, rand in out]
    names = [n for n, *_ in out]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"cfg.eval names the same evaluation twice: {dupes}")
    return out


def metric_keys(kind: str, sub_cfg: Any, random_init: bool = False) -> list[str]:
    """The metric keys one evaluation logs (the runner's own rule; random-init baselines: random_<key>)."""
    if kind == "probe":
        from roma.eval.classification import metric_keys as keys
    else:
        from roma.eval.dense import metric_keys as keys
    return [f"random_{k}" if random_init else k for k in keys(sub_cfg)]


def metric_key_collisions(cfg: RunConfig) -> list[tuple[str, str, list[str]]]:
    """(section key, metric key, the evaluations reporting it) for every key two evaluations share:
    in one MLflow run the second would overwrite the first."""
    owners: dict[str, list[str]] = {}
    where: dict[str, str] = {}
    index = {id(p): f"eval.probes[{i}]" for i, p in enumerate(cfg.eval.probes)}
    index.update({id(d): f"eval.dense[{i}]" for i, d in enumerate(cfg.eval.dense)})
    for name, kind, sub, rand in evaluations(cfg):
        for key in metric_keys(kind, sub, rand):
            owners.setdefault(key, []).append(name)
            where.setdefault(key, index[id(sub)])
            if len(owners[key]) == 2:
                where[key] = index[id(sub)]  # the later evaluation is the one to rename
    return [(where[k], k, names) for k, names in owners.items() if len(names) > 1]


@dataclass(frozen=True)
class EvalData:
    """One evaluation's dataset: where it is read from and whether it is there."""

    name: str  # the evaluation (its folder under <run_dir>/eval)
    dataset: str  # aid, ucm, oscd, spacenet, levir, ...
    root: str
    env: str | None  # the environment variable the paper specs read the root from (config.EVAL_DATA_ENV)
    present: bool


def evaluation_data(cfg: RunConfig) -> list[EvalData]:
    """Every evaluation of cfg with its data root and whether that root exists (dry runs warn, launches refuse).

    A root still holding an unexpanded `${VAR}` (a spec loaded with require_env=False) is absent."""
    out = []
    for name, kind, sub, _ in evaluations(cfg):
        dataset = sub.dataset if kind == "probe" else sub.task
        present = bool(sub.root) and "${" not in sub.root and Path(sub.root).exists()
        out.append(EvalData(name, dataset, sub.root, EVAL_DATA_ENV.get(dataset), present))
    return out


def _ratios_tag(sub_cfg: Any) -> str:
    return "_".join(f"tr{round(r * 100)}" for r in getattr(sub_cfg, "train_ratios", ()))


def _short_hash(sub_cfg: Any) -> str:
    blob = json.dumps(to_plain(sub_cfg), sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:6]
