"""RunConfig from plain data, typed and checked: every value a run needs is refused here, before
anything is submitted, with the file (or --set) and key that set it.

    cfg = build_config(plain_dict)                      # types (lists -> tuples), unknown keys
    problems = check_config(cfg, where, check_data=True)  # values, enumerations (config.CHOICES), data roots
    text = dump_config(cfg); cfg == load_config(text)

`where(key)` names the origin of a key (roma.spec passes the spec file or --set that set it).
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
import types
import typing
from pathlib import Path
from typing import Any, Callable

from roma import atomic, yamlio

from roma.config import CHOICES, EVAL_DATA_ENV, RunConfig, to_plain

Where = Callable[[str], str]
# experiment and spec names become one folder under output_root (and an MLflow experiment)
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
SAFE_NAME_RULE = "a name is one folder name: letters, digits, '.', '_', '-', starting with a letter or digit"


def is_safe_name(name: str) -> bool:
    return bool(_SAFE_NAME.fullmatch(name)) and len(name) <= 200


# keys that no longer exist -> what replaced them (a spec or config.yaml of an older version)
RENAMED = {
    "train.batch_size": "the per-device batch is derived now; set train.global_batch (images per optimizer step "
                        "over all devices, paper 256) and, for memory, train.max_device_batch",
    "train.accum_steps": "gradient accumulation is derived from train.global_batch, the world size and "
                         "train.max_device_batch",
}


class ConfigError(ValueError):
    """One or more problems in a config or spec; str() lists them all, one per line."""

    def __init__(self, problems: list[str]):
        self.problems = list(dict.fromkeys(problems))  # de-duplicated, order kept
        super().__init__("invalid spec:\n  " + "\n  ".join(self.problems))


# ---------------------------------------------------------------- typed construction

def valid_keys(cls: type, prefix: str = "") -> list[str]:
    """Every dotted key a dataclass accepts, sections included ("model", "model.name", ...)."""
    hints = typing.get_type_hints(cls)
    keys = []
    for f in dataclasses.fields(cls):
        keys.append(prefix + f.name)
        t = hints[f.name]
        if dataclasses.is_dataclass(t):
            keys += valid_keys(t, f"{prefix}{f.name}.")
    return keys


def suggest(key: str, candidates: list[str]) -> str:
    """' (did you mean ...)' for the closest candidate, comparing full keys and their last parts."""
    def score(c: str) -> float:
        full = difflib.SequenceMatcher(None, key, c).ratio()
        leaf = difflib.SequenceMatcher(None, key.rsplit(".", 1)[-1], c.rsplit(".", 1)[-1]).ratio()
        return max(full, leaf)
    best = max(candidates, key=score, default=None)
    return f" (did you mean {best!r}?)" if best is not None and score(best) >= 0.6 else ""


def _type_name(t: Any) -> str:
    return getattr(t, "__name__", None) or str(t).replace("typing.", "")


def _coerce(value: Any, t: Any, key: str, where, errors: list[str]) -> Any:
    """Check `value` against the annotation `t`; returns the converted value (lists -> tuples)."""
    origin = typing.get_origin(t)
    args = typing.get_args(t)
    if t is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], key, where, errors)
    if dataclasses.is_dataclass(t):
        if not isinstance(value, dict):
            errors.append(f"{where(key)}: {key}: expected a mapping of {t.__name__} fields, got {value!r}")
            return None
        return _build(t, value, key + ".", where, errors)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            if len(args) == 2 and args[1] is Ellipsis:
                value = [value]  # a scalar is a one-element tuple: `msp.scales: 4`
            else:
                errors.append(f"{where(key)}: {key}: expected a list of {len(args)} values, got {value!r}")
                return None
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{key}[{i}]", where, errors) for i, v in enumerate(value))
        if len(value) != len(args):
            errors.append(f"{where(key)}: {key}: expected {len(args)} values, got {len(value)}")
            return None
        return tuple(_coerce(v, a, f"{key}[{i}]", where, errors) for i, (v, a) in enumerate(zip(value, args)))
    ok = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, (int, float)) and not isinstance(value, bool),
        str: isinstance(value, str),
    }.get(t)
    if ok is None:
        raise TypeError(f"roma.validation cannot check fields of type {t!r} ({key})")
    if not ok:
        errors.append(f"{where(key)}: {key}: expected {_type_name(t)}, got {type(value).__name__} {value!r}")
        return None
    return float(value) if t is float else value


def _build(cls: type, data: dict, prefix: str, where, errors: list[str], extra_keys: tuple[str, ...] = ()):
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for k, v in data.items():
        key = f"{prefix}{k}"
        if k not in names:
            valid = [n for n in valid_keys(RunConfig) if n.startswith(prefix)] or [prefix + n for n in names]
            valid += list(extra_keys) if not prefix else []
            hint = f": {RENAMED[key]}" if key in RENAMED else suggest(key, valid)
            errors.append(f"{where(key)}: unknown key {key!r}{hint}")
            continue
        kwargs[k] = _coerce(v, hints[k], key, where, errors)
    if any(v is None and typing.get_origin(hints[k]) not in (typing.Union, types.UnionType)
           for k, v in kwargs.items()):
        return None  # a field failed; its error is recorded
    return cls(**kwargs)


def build_config(d: dict, where: Where = lambda key: "config", extra_keys: tuple[str, ...] = ()) -> RunConfig:
    """A RunConfig from a plain (nested) dict, e.g. RunConfig.to_dict() read back from YAML.

    extra_keys: other top-level keys the caller accepts (spec meta keys), for "did you mean" hints."""
    errors: list[str] = []
    d = dict(d)
    if "sweep" in d:
        d["sweep"] = tuple(tuple(p) for p in d["sweep"])
    cfg = _build(RunConfig, d, "", where, errors, extra_keys)
    if errors or cfg is None:
        raise ConfigError(errors or ["config: could not be built"])
    return cfg



# ---------------------------------------------------------------- values of one run

def known_models() -> list[str]:
    from roma.models.registry import list_models

    return list(list_models())


def _non_finite(obj: Any, prefix: str = "") -> list[str]:
    """Dotted keys of every NaN/inf float in a config (no value of a run may be one)."""
    out = []
    if dataclasses.is_dataclass(obj):
        for f in dataclasses.fields(obj):
            out += _non_finite(getattr(obj, f.name), f"{prefix}{f.name}.")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            out += _non_finite(v, f"{prefix[:-1]}[{i}].")
    elif isinstance(obj, float) and not math.isfinite(obj):
        out.append(prefix[:-1])
    return out



def _metric_key_problems(cfg: RunConfig, where: Where) -> list[str]:
    """Two evaluations of one run that report the same metric key (one MLflow run: one would overwrite
    the other). Keys are <dataset>_oa_tr<pct> for probes, <task>_<metric> for dense tasks."""
    from roma.eval.plan import metric_key_collisions

    try:
        collisions = metric_key_collisions(cfg)
    except ValueError as e:  # two identical evaluations
        return [f"{where('eval')}: eval: {e}"]
    grouped: dict[tuple[str, tuple[str, ...]], list[str]] = {}
    for section, key, names in collisions:
        grouped.setdefault((section, tuple(names)), []).append(key)
    out = []
    for (section, names), keys in grouped.items():
        fix = (f"give {section}.dataset (the metric prefix) another value, e.g. 'aid_full'"
               if section.startswith("eval.probes") else "keep one (a dense task's keys are <task>_<metric>)")
        out.append(f"{where(section)}: {section}: evaluations {' and '.join(names)} report the same metric(s) "
                   f"{', '.join(keys)}: {fix}")
    return out


def count_images(root: str) -> int:
    """Images behind a data root, as the job will list them (cached: see roma.data.fingerprint)."""
    from roma.data.fingerprint import data_fingerprint, default_cache_dir

    return data_fingerprint(root, None, 0, default_cache_dir()).total


def with_data_checksum(cfg: RunConfig, where: Where = lambda key: "config") -> tuple[RunConfig, list[str]]:
    """cfg with data.checksum and data.heldout_checksum computed from its data (the run id's data
    part), and the problems: data that cannot be listed, that does not give the checksum the spec
    pins, or held-out images that a training subset could reach (roma.data.heldout)."""
    from roma.data.fingerprint import data_fingerprint, default_cache_dir

    d = cfg.data
    if not d.root:
        return cfg, []
    try:
        fp = data_fingerprint(d.root, d.subset, d.subset_seed, default_cache_dir())
    except (OSError, ValueError) as e:
        return cfg, [f"{where('data.root')}: data.root: cannot compute the checksum of the data "
                     f"(the run id follows it): {e}"]
    if d.checksum and d.checksum != fp.checksum:
        what = "all images" if d.subset is None else f"subset {d.subset}, seed {d.subset_seed}"
        return cfg, [f"{where('data.checksum')}: data.checksum: pinned to {d.checksum[:12]}.., but the data at "
                     f"{d.root} ({what}) gives {fp.checksum[:12]}..: these are other images"]
    from roma.data.heldout import with_heldout_checksum

    d, problems = with_heldout_checksum(dataclasses.replace(d, checksum=fp.checksum), default_cache_dir())
    return dataclasses.replace(cfg, data=d), [f"{where(key)}: {key}: {msg}" for key, msg in problems]


def root_exists(root: str) -> bool:
    from roma.data.shard_reader import expand_shard_pattern, is_shard_pattern

    if is_shard_pattern(root):
        try:
            return bool(expand_shard_pattern(root))
        except (OSError, ValueError):
            return False
    return Path(root).exists()


def advisories(cfg: RunConfig, where: Where = lambda key: "config") -> list[str]:
    """What `cfg` can run but probably does not mean, one line each naming origin and key (a launch
    and a dry run print them as notes; nothing is refused).

    An MSP block size equal to model.cluster_size: each such block is exactly one prediction cluster,
    predicted from the same context as that cluster's tokens, so the scale adds no coarser level
    (it is not multi-scale). Not refused: the paper's scale ablation has such a row (scale 4 with
    4x4 clusters) and means it."""
    if not cfg.msp.enabled:
        return []
    c = cfg.model.cluster_size
    return [f"{where('msp.scales')}: msp.scales: block size {s} equals model.cluster_size {c}: each MSP block is "
            f"one {c}x{c}-patch prediction cluster with that cluster's own context, so this scale is not coarser "
            "than the token loss (not multi-scale); a block larger than the cluster is"
            for s in cfg.msp.scales if s == c]


def check_config(cfg: RunConfig, where: Where = lambda key: "config", check_data: bool = True,
                 counts: dict[str, int | str | None] | None = None) -> list[str]:
    """Every problem of `cfg`, one line each naming origin and key; [] when it can run.

    check_data: also check the file system (data and evaluation roots, subset sizes); `counts`
    caches image counts (or the listing's error) per data root across the runs of one spec."""
    counts = {} if counts is None else counts
    models = known_models()
    errs: list[str] = []

    def err(key: str, msg: str) -> None:
        errs.append(f"{where(key)}: {key}: {msg}")

    if not is_safe_name(cfg.experiment):
        err("experiment", f"{cfg.experiment!r} is not a safe name: {SAFE_NAME_RULE}")
    if check_data and (problem := atomic.writable_problem(cfg.output_root)):
        err("output_root", f"runs cannot be written under {cfg.output_root}: {problem}")
    for key in _non_finite(cfg):
        err(key, "must be a finite number, not NaN or infinity")

    m = cfg.model
    if m.name not in models:
        err("model.name", f"unknown model {m.name!r}{suggest(m.name, models)}; known: {', '.join(models)}")
    for k in ("img_size", "patch_size", "cluster_size", "decoder_dim", "decoder_depth", "decoder_heads"):
        if getattr(m, k) <= 0:
            err(f"model.{k}", f"must be positive, got {getattr(m, k)}")
    grid = 0
    if m.patch_size > 0 and m.cluster_size > 0:
        unit = m.patch_size * m.cluster_size
        if m.img_size % unit:
            err("model.img_size", f"{m.img_size} is not divisible by patch_size x cluster_size = "
                f"{m.patch_size} x {m.cluster_size} = {unit}")
        else:
            grid = m.img_size // m.patch_size
            if grid // m.cluster_size < 2:
                err("model.img_size", f"a {grid}x{grid} patch grid holds one {m.cluster_size}x{m.cluster_size} "
                    "cluster: nothing to predict autoregressively")
    if m.decoder_heads > 0 and m.decoder_dim % m.decoder_heads:
        err("model.decoder_dim", f"{m.decoder_dim} is not divisible by decoder_heads={m.decoder_heads}")
    if cfg.msp.enabled and grid:
        for s in cfg.msp.scales:
            if s <= 0 or grid % s:
                err("msp.scales", f"block size {s} does not divide the {grid}x{grid} patch grid")
        if not cfg.msp.scales:
            err("msp.scales", "MSP is enabled with no scales")
    if cfg.msp.weight < 0:
        err("msp.weight", f"must be >= 0, got {cfg.msp.weight}")
    if cfg.ares.enabled and grid:
        for s in cfg.ares.region_sizes:
            if not 0 < s <= grid:
                err("ares.region_sizes", f"region size {s} is outside 1..{grid} (the patch grid)")
    if not 0.0 <= cfg.ares.p <= 1.0:
        err("ares.p", f"a probability in [0, 1], got {cfg.ares.p}")
    t = cfg.train
    for k in ("epochs", "global_batch", "max_device_batch", "ckpt_every_steps", "log_every_steps"):
        if getattr(t, k) <= 0:
            err(f"train.{k}", f"must be positive, got {getattr(t, k)}")
    if t.max_steps is not None and t.max_steps <= 0:
        err("train.max_steps", f"must be positive or null, got {t.max_steps}")
    if t.steps is not None and t.steps <= 0:
        err("train.steps", f"must be positive or null (null: train.epochs passes), got {t.steps}")
    elif t.steps is not None and t.max_steps is not None:
        err("train.steps", f"{t.steps} fixes the step budget and train.max_steps {t.max_steps} caps the epoch "
            "budget: give one of them")
    if not t.blr > 0:
        err("train.blr", f"must be positive, got {t.blr}")
    for k in ("min_lr", "warmup_epochs", "weight_decay"):
        if getattr(t, k) < 0:
            err(f"train.{k}", f"must be >= 0, got {getattr(t, k)}")
    if not t.clip_grad > 0:
        err("train.clip_grad", f"must be positive (the gradient-norm limit), got {t.clip_grad}")
    if not all(0 <= b < 1 for b in t.betas):
        err("train.betas", f"Adam betas lie in [0, 1), got {list(t.betas)}")
    if any(e < 0 for e in t.keep_epochs):
        err("train.keep_epochs", f"epochs are >= 0, got {list(t.keep_epochs)}")
    if t.val_every_steps < 0:
        err("train.val_every_steps", f"must be >= 0 (0: the held-out loss at the last step only), got {t.val_every_steps}")
    elif t.val_every_steps and not cfg.data.heldout_size:
        err("train.val_every_steps", f"{t.val_every_steps} asks for a held-out loss, but data.heldout_size is 0 "
            "(no held-out images)")
    r = cfg.resources
    for k in ("nodes", "cpus_per_task", "mem_gb", "time_min"):
        if getattr(r, k) <= 0:
            err(f"resources.{k}", f"must be positive, got {getattr(r, k)}")
    if r.gpus_per_node < 0:
        err("resources.gpus_per_node", f"must be >= 0, got {r.gpus_per_node}")
    if r.time_min * 60 <= r.signal_delay_s + 60:
        err("resources.time_min", f"{r.time_min} min leaves no time: SLURM signals {r.signal_delay_s} s before "
            "the limit and checks limits every 30 s; keep time_min*60 > signal_delay_s + 60")
    # enumerations
    values = {"ares.descriptor": [cfg.ares.descriptor], "ares.target": [cfg.ares.target],
              "ares.angle_embed": [cfg.ares.angle_embed], "train.precision": [t.precision],
              **{f"eval.probes.{k}": [getattr(p, k) for p in cfg.eval.probes] for k in ("protocol", "scan", "readout")},
              **{f"eval.dense.{k}": [getattr(d, k) for d in cfg.eval.dense] for k in ("task", "scan", "precision")}}
    for key, vals in values.items():
        for v in vals:
            if v not in CHOICES[key]:
                err(key, f"{v!r} is not one of {', '.join(CHOICES[key])}{suggest(v, list(CHOICES[key]))}")
    # every other value of every evaluation: the runners' own rules (roma.eval.checks)
    from roma.eval.checks import dense_problems, probe_problems

    patch = m.patch_size if m.patch_size > 0 else None
    for section, items, problems in (("probes", cfg.eval.probes, probe_problems), ("dense", cfg.eval.dense, dense_problems)):
        for i, item in enumerate(items):
            for field, msg in problems(item, patch):
                err(f"eval.{section}[{i}].{field}", msg)
    if all(v in CHOICES[k] for k, vals in values.items() if k.startswith("eval.") for v in vals):
        errs += _metric_key_problems(cfg, where)  # (keys are named after the task: it must be a known one)
    # data
    dc = cfg.data
    if not 0.0 <= dc.max_bad_fraction <= 1.0:
        err("data.max_bad_fraction", f"a fraction in [0, 1], got {dc.max_bad_fraction}")
    if dc.num_workers < 0:
        err("data.num_workers", f"must be >= 0, got {dc.num_workers}")
    lo, hi = dc.crop_scale
    if not 0 < lo <= hi <= 1:
        err("data.crop_scale", f"(min, max) area fractions with 0 < min <= max <= 1, got {[lo, hi]}")
    if cfg.data.subset is not None and cfg.data.subset <= 0:
        err("data.subset", f"must be positive or null, got {cfg.data.subset}")
    if dc.nominal_total is not None and dc.nominal_total <= 0:
        err("data.nominal_total", f"must be a positive number of images or null, got {dc.nominal_total}")
    if dc.heldout_size < 0:
        err("data.heldout_size", f"must be >= 0 (0: no held-out loss), got {dc.heldout_size}")
    elif dc.heldout_root and not dc.heldout_size:
        err("data.heldout_root", f"{dc.heldout_root} is given but data.heldout_size is 0: say how many held-out images")
    elif dc.heldout_root and dc.root and os.path.abspath(dc.heldout_root) == os.path.abspath(dc.root):
        err("data.heldout_root", f"is data.root itself ({dc.root}): leave it empty to draw the held-out images "
            "from data.root, beyond every subset")
    if check_data:
        if not cfg.data.root:
            err("data.root", "missing data root (set data.root in the spec, --data-root or --set data.root=...)")
        elif not root_exists(cfg.data.root):
            err("data.root", f"data root {cfg.data.root} does not exist")
        else:
            if cfg.data.root not in counts:
                try:
                    counts[cfg.data.root] = count_images(cfg.data.root)
                except (OSError, ValueError) as e:  # unreadable shard, malformed manifest, no images
                    counts[cfg.data.root] = f"cannot list the images of {cfg.data.root}: {e}"
            n = counts[cfg.data.root]
            if isinstance(n, str):
                err("data.root", n)
            elif n is not None and cfg.data.subset is not None and cfg.data.subset > n:
                err("data.subset", f"subset of {cfg.data.subset} images is larger than the dataset at "
                    f"{cfg.data.root} ({n} images)")
        if cfg.data.heldout_root and not root_exists(cfg.data.heldout_root):
            err("data.heldout_root", f"held-out data root {cfg.data.heldout_root} does not exist")
        for section, items in (("probes", cfg.eval.probes), ("dense", cfg.eval.dense)):
            for i, item in enumerate(items):
                key = f"eval.{section}[{i}].root"
                dataset = getattr(item, "dataset", None) or getattr(item, "task", "")
                hint = (f" (set {EVAL_DATA_ENV[dataset]} to the {dataset} dataset, or --set {key}=...)"
                        if dataset in EVAL_DATA_ENV else "")
                if not item.root:
                    err(key, "missing root" + hint)
                elif not Path(item.root).exists():
                    err(key, f"{item.root} does not exist{hint}")
    return errs



# ---------------------------------------------------------------- YAML

def dump_config(cfg: RunConfig) -> str:
    """The config as YAML (config.yaml of a run folder)."""
    return yamlio.dump(to_plain(cfg), sort_keys=False)


def load_config(text: str) -> RunConfig:
    return build_config(yamlio.load(text) or {})
