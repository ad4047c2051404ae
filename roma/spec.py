"""Spec files -> composed, expanded lists of RunConfig (each built and checked by roma.validation).

A spec is a YAML file (experiments/specs/<name>.yaml). Top-level keys are either meta keys or
RunConfig sections (dotted keys such as `data.subset: 250000` work too):

    base: micro                 # a built-in base (roma.recipe.BASES) or another spec file, relative to this one
    description: "..."
    cluster: my_cluster         # a slurm/profiles/<name>.yaml profile (launcher: SLURM executor)
    parallelism: 8              # SLURM array concurrency cap
    fallback_data: ucm          # data.root absent, no --data-root: fetch UC Merced, use its halves
    model: roma_base            # shorthand for model.name; geometry defaults come from the registry
    train: {max_steps: 300}
    grid: {data.subset: [312, 625], train.seed: [0, 1, 2]}          # cartesian product
    zip: {label: [base, ares], ares.enabled: [false, true]}        # parallel lists (or a list of such)

Layers apply in order: base (recursively), the file, then command-line `--set key=value` (values
are YAML-typed). `label` is a pseudo-axis naming the runs of a zip/grid. `${VAR}` in a string
reads an environment variable. Relative paths are relative to the repository root.
Every error names its file (or --set) and key; nothing is returned when any run is invalid.
"""
from __future__ import annotations

import copy
import dataclasses
import difflib
import fnmatch
import itertools
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from roma import yamlio
from roma.config import RunConfig
from roma.naming import run_name
from roma.recipe import BASES
from roma.validation import (SAFE_NAME_RULE, ConfigError, advisories, build_config, check_config, count_images,
                             is_safe_name, root_exists, suggest, valid_keys, with_data_checksum)

REPO_ROOT = Path(__file__).resolve().parents[1]
SPEC_DIR = REPO_ROOT / "experiments" / "specs"
META_KEYS = ("kind", "base", "description", "cluster", "parallelism", "grid", "zip", "fallback_data")
SET_ORIGIN = "--set"
# ModelConfig fields whose defaults come from the registry entry of the chosen model name.
REGISTRY_MODEL_FIELDS = ("img_size", "patch_size", "cluster_size", "decoder_dim", "decoder_depth", "decoder_heads")


def safe_load(text: str) -> Any:
    return yamlio.load(text)  # the project's one YAML loader: safe types, no anchors/aliases


@dataclass
class Spec:
    name: str
    path: Path
    runs: list[RunConfig]
    description: str = ""
    cluster: str | None = None
    parallelism: int = 0  # 0: no cap
    resources_set: dict[str, Any] = field(default_factory=dict)  # resources keys the spec set explicitly
    fallback_data: str | None = None  # a public dataset to fetch when data.root is absent (roma.launch.fallback_data)
    # dry_run: what a real launch would refuse but a plan can do without (unset variables, missing data)
    warnings: list[str] = field(default_factory=list)
    data_counts: dict[str, int | None] = field(default_factory=dict)  # images per existing data root
    # printed, never refused: what runs but probably is not meant (roma.validation.advisories) and,
    # in a dry run, what the plan assumed that a launch decides from the data (the largest subset's size)
    notes: list[str] = field(default_factory=list)

    def names(self) -> list[str]:
        return [run_name(r) for r in self.runs]


# ---------------------------------------------------------------- small helpers

def spec_path(name_or_path: str | os.PathLike) -> Path:
    """`scaling_data` -> experiments/specs/scaling_data.yaml; an existing path is taken as is."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.exists():
        if not p.exists():
            raise ConfigError([f"{p}: spec file not found"])
        return p
    if not is_safe_name(str(name_or_path)):
        raise ConfigError([f"spec name {str(name_or_path)!r}: {SAFE_NAME_RULE} (or give the path of a .yaml file)"])
    cand = SPEC_DIR / f"{name_or_path}.yaml"
    if not cand.exists():
        close = difflib.get_close_matches(str(name_or_path), list_specs(), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError([f"no spec named {str(name_or_path)!r} in {SPEC_DIR}{hint}"])
    return cand


def list_specs(runs_only: bool = False) -> list[str]:
    """Spec names in experiments/specs; runs_only drops files of another `kind:` (e.g. benchmark)."""
    names = sorted(p.stem for p in SPEC_DIR.glob("*.yaml"))
    return [n for n in names if not runs_only or _kind(SPEC_DIR / f"{n}.yaml") == "runs"]


def _kind(path: Path) -> str:
    try:
        raw = safe_load(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, yaml.YAMLError):  # ValueError: not UTF-8
        return "runs"  # load_spec reports the problem
    return str(raw.get("kind", "runs")) if isinstance(raw, dict) else "runs"


def parse_set(items: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """["model=roma_small", "msp.scales=[2,4]"] -> {"model": "roma_small", "msp.scales": [2, 4]}.

    A key may index a list of sections, `eval.dense[0].batch_size=16`: load_spec sets that one field."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError([f"{SET_ORIGIN} {item!r}: expected key=value"])
        try:
            out[key.strip()] = safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as e:
            raise ConfigError([f"{SET_ORIGIN} {item!r}: value is not valid YAML ({_yaml_reason(e)})"]) from None
    return out


def _yaml_reason(e: yaml.YAMLError) -> str:
    return str(e) if isinstance(e, yamlio.NoAliasError) else e.__class__.__name__


def _registry_geometry(name: str) -> dict[str, Any]:
    from roma.models.registry import MODELS

    size = MODELS.get(name)
    return {k: getattr(size, k) for k in REGISTRY_MODEL_FIELDS if hasattr(size, k)} if size else {}


# ---------------------------------------------------------------- nested-dict plumbing

def _set_dotted(d: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    for p in parts[:-1]:
        nxt = d.get(p)
        if not isinstance(nxt, dict):
            nxt = d[p] = {}
        d = nxt
    d[parts[-1]] = value


# `eval.dense[0].batch_size`: one field of one entry of a list of sections (--set only)
LIST_ITEM_KEY = re.compile(r"^(?P<list>[A-Za-z_][\w.]*)\[(?P<index>\d+)\]\.(?P<field>[A-Za-z_][\w.]*)$")


def _set_list_item(raw: dict, key: str, value: Any, errors: list[str]) -> None:
    """Set `list[i].field` in the composed spec; a list or an entry that is not there is a named error."""
    m = LIST_ITEM_KEY.match(key)
    name, index = m["list"], int(m["index"])
    node: Any = raw
    for part in name.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    if not isinstance(node, list):
        errors.append(f"{SET_ORIGIN}: {key}: {name} is not a list in this spec")
    elif index >= len(node) or not isinstance(node[index], dict):
        n = len(node)
        errors.append(f"{SET_ORIGIN}: {key}: {name} has {n} {'entry' if n == 1 else 'entries'}"
                      + (f" (indices 0..{n - 1})" if n else ""))
    else:
        _set_dotted(node[index], m["field"], value)


def _normalise(raw: dict, origin: str, errors: list[str]) -> dict:
    """Dotted keys -> nested dicts; `model: name` -> {"model": {"name": name}}."""
    out: dict = {}
    for key, value in raw.items():
        if not isinstance(key, str):
            errors.append(f"{origin}: key {key!r} is not a string")
            continue
        if isinstance(value, dict) and key not in ("grid", "zip"):
            value = _normalise(value, origin, errors)
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            value = _merge(out[key], value)  # `data.subset: 1` given before `data: {...}`
        _set_dotted(out, key, value)
    if isinstance(out.get("model"), str):
        out["model"] = {"name": out["model"]}
    return out


def _merge(base: dict, over: dict) -> dict:
    """Deep merge; `zip` and non-dict values replace, dicts (`grid` included) merge key-wise."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and k != "zip":
            out[k] = _merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _leaf_keys(d: dict, prefix: str = "") -> list[str]:
    keys = []
    for k, v in d.items():
        if isinstance(v, dict) and k not in ("grid", "zip") and v:
            keys += _leaf_keys(v, f"{prefix}{k}.")
        else:
            keys.append(f"{prefix}{k}")
    return keys


# ---------------------------------------------------------------- loading layers

def _load_file(path: Path, origins: dict[str, str], errors: list[str], chain: tuple[Path, ...] = ()) -> dict:
    """The file's merged raw dict with its bases applied; records which file set each key."""
    path = path.resolve()
    if path in chain:
        errors.append(f"{path}: base cycle: {' -> '.join(str(p) for p in (*chain, path))}")
        return {}
    try:
        raw = safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        errors.append(f"{path}: not a UTF-8 text file (byte {e.object[e.start]:#04x} at offset {e.start})")
        return {}
    except (OSError, yaml.YAMLError) as e:
        errors.append(f"{path}: cannot read spec: {e}")
        return {}
    if raw is None:  # an empty file (or only comments) is a mistake, not "all defaults"
        errors.append(f"{path}: the spec is empty; write at least `base: defaults` to run the defaults")
        return {}
    if not isinstance(raw, dict):
        errors.append(f"{path}: a spec must be a mapping of keys, got {type(raw).__name__}")
        return {}
    layer = _normalise(raw, str(path), errors)
    merged: dict = {}
    base = layer.pop("base", None)
    if base is not None:
        if not isinstance(base, str):
            errors.append(f"{path}: base: expected a name or a file, got {base!r}")
        elif base in BASES:
            merged = _normalise(copy.deepcopy(BASES[base]), f"base {base!r}", errors)
            for k in _leaf_keys(merged):
                origins[k] = f"{path} (base {base!r})"
        else:
            bpath = Path(base) if Path(base).is_absolute() else path.parent / base
            if bpath.suffix not in (".yaml", ".yml"):
                bpath = bpath.with_suffix(".yaml")
            if not bpath.exists():
                close = difflib.get_close_matches(base, [*BASES, *list_specs()], n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                errors.append(f"{path}: base: {base!r} is neither a built-in base ({', '.join(BASES)}) "
                              f"nor a spec file{hint}")
            else:
                merged = _load_file(bpath, origins, errors, (*chain, path))
    for k in _leaf_keys(layer):
        origins[k] = str(path)
    return _merge(merged, layer)


def _expand_env(value: Any, key: str, where, errors: list[str] | None, keep: bool = False) -> Any:
    """${VAR} -> its value; an unset VAR is an error (errors=None: not reported) and becomes ""
    (keep: stays as written, so a dry run's config shows what the launch will need)."""
    if isinstance(value, str):
        def sub(m: re.Match) -> str:
            var = m.group(1)
            if var not in os.environ:
                if errors is not None:
                    errors.append(f"{where(key)}: {key}: environment variable {var} is not set")
                return m.group(0) if keep or errors is None else ""
            return os.environ[var]
        return re.sub(r"\$\{(\w+)\}", sub, value)
    if isinstance(value, dict):
        return {k: _expand_env(v, f"{key}.{k}" if key else k, where, errors, keep) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand_env(v, f"{key}[{i}]", where, errors, keep) for i, v in enumerate(value)]
    return value


# ---------------------------------------------------------------- sweeps

def _sweep_combos(grid: Any, zips: Any, origin_of, errors: list[str]) -> list[list[tuple[str, Any]]]:
    """grid (cartesian, declared order) x each zip group (parallel lists) -> [[(axis, value)...]]."""
    factors: list[list[list[tuple[str, Any]]]] = []
    if grid is not None:
        if not isinstance(grid, dict):
            errors.append(f"{origin_of('grid')}: grid: expected a mapping axis -> list of values")
            grid = {}
        for axis, values in grid.items():
            if not isinstance(values, list) or not values:
                errors.append(f"{origin_of('grid')}: grid.{axis}: expected a non-empty list of values, got {values!r}")
                continue
            factors.append([[(axis, v)] for v in values])
    groups = [] if zips is None else zips if isinstance(zips, list) else [zips]
    for group in groups:
        if not isinstance(group, dict) or not group:
            errors.append(f"{origin_of('zip')}: zip: expected a mapping axis -> list (or a list of such)")
            continue
        lengths = {a: len(v) if isinstance(v, list) else -1 for a, v in group.items()}
        if min(lengths.values()) <= 0 or len(set(lengths.values())) != 1:
            errors.append(f"{origin_of('zip')}: zip: axes must be non-empty lists of one length, got "
                          + ", ".join(f"{a}: {n if n >= 0 else 'not a list'}" for a, n in lengths.items()))
            continue
        n = next(iter(lengths.values()))
        factors.append([[(a, group[a][i]) for a in group] for i in range(n)])
    return [sum(combo, []) for combo in itertools.product(*factors)] if factors else [[]]


# ---------------------------------------------------------------- paths

def _resolve_path(p: str) -> str:
    # an unset ${VAR} (dry run) stays as written
    return p if not p or os.path.isabs(p) or "${" in p else str((REPO_ROOT / p).resolve())


# ---------------------------------------------------------------- the entry point

def load_spec(name_or_path: str | os.PathLike, overrides: dict[str, Any] | None = None,
              data_root: str | None = None, check_data: bool = True, require_env: bool = True,
              dry_run: bool = False) -> Spec:
    """Load, compose, expand and validate a spec. Raises ConfigError listing every problem.

    overrides: {"dotted.key": value} (see parse_set); data_root: replaces data.root (a path relative
    to the current directory); check_data=False skips the file-system checks (roots, dataset size).
    dry_run: unset environment variables and the file-system problems (missing roots, a subset
    larger than the data) become Spec.warnings instead of errors, so a study can be planned before
    its data exists; an unset ${VAR} stays in the config as written.
    """
    path = spec_path(name_or_path)
    errors: list[str] = []
    origins: dict[str, str] = {}
    raw = _load_file(path, origins, errors)
    if overrides:
        indexed = {k: v for k, v in overrides.items() if LIST_ITEM_KEY.match(k)}
        layer = _normalise({k: v for k, v in overrides.items() if k not in indexed}, SET_ORIGIN, errors)
        for k in _leaf_keys(layer):
            origins[k] = SET_ORIGIN
        raw = _merge(raw, layer)
        for k, v in indexed.items():  # after the lists they index are composed (bases, the spec, --set)
            _set_list_item(raw, k, v, errors)
            origins[re.sub(r"\[\d+\]", "", k)] = SET_ORIGIN
    if data_root is not None:
        raw = _merge(raw, {"data": {"root": str(Path(data_root).resolve())}})
        origins["data.root"] = "--data-root"

    def where(key: str) -> str:
        """The file (or --set) that set `key` or its closest enclosing section."""
        k = re.sub(r"\[\d+\]", "", key)
        below = [o for ok, o in origins.items() if ok.startswith(k + ".")]  # an unknown section's keys
        while k:
            if k in origins:
                return origins[k]
            k = k.rpartition(".")[0]
        return below[0] if below else str(path)

    meta = {k: raw.pop(k) for k in META_KEYS if k in raw}
    if meta.get("kind", "runs") != "runs":
        raise ConfigError([f"{path}: kind: {meta['kind']!r} spec, not a spec of runs (kind: runs)"])
    raw.setdefault("experiment", path.stem)
    warnings: list[str] = []
    raw = _expand_env(raw, "", where, (warnings if dry_run else errors) if require_env else None, keep=dry_run)
    if "sweep" in raw:
        errors.append(f"{where('sweep')}: sweep: set by the spec's grid/zip, not directly")
        raw.pop("sweep")
    parallelism = meta.get("parallelism", 0)
    if not isinstance(parallelism, int) or isinstance(parallelism, bool) or parallelism < 0:
        errors.append(f"{where('parallelism')}: parallelism: expected an integer >= 0, got {parallelism!r}")
    cluster = meta.get("cluster")
    if cluster is not None and not isinstance(cluster, str):
        errors.append(f"{where('cluster')}: cluster: expected a profile name, got {cluster!r}")

    # --set on a grid axis fixes it (the axis goes); a zipped axis cannot be fixed alone
    set_keys = {"model.name" if k == "model" else k for k in (overrides or {})}
    if isinstance(meta.get("grid"), dict):
        meta["grid"] = {a: v for a, v in meta["grid"].items() if ("model.name" if a == "model" else a) not in set_keys}
    for group in (meta.get("zip") if isinstance(meta.get("zip"), list) else [meta.get("zip")]):
        for axis in group if isinstance(group, dict) else {}:
            if ("model.name" if axis == "model" else axis) in set_keys:
                errors.append(f"{SET_ORIGIN}: {axis}: is a zipped sweep axis of {where('zip')}; "
                              "use --only to pick runs instead")
    valid_axes = valid_keys(RunConfig)
    combos = _sweep_combos(meta.get("grid"), meta.get("zip"), lambda k: where(k), errors)
    for combo in combos[:1]:  # a swept key's value comes from the grid/zip that declares it
        for axis, _ in combo:
            kind = "grid" if isinstance(meta.get("grid"), dict) and axis in meta["grid"] else "zip"
            origins["model.name" if axis == "model" else axis] = f"{where(kind)} ({kind})"
    runs: list[RunConfig] = []
    notes: list[str] = []  # Spec.notes
    counts: dict[str, int | str | None] = {}
    for combo in combos:
        d = copy.deepcopy(raw)
        for axis, value in combo:
            if axis == "label":
                continue
            axis_key = "model.name" if axis == "model" else axis
            if axis_key not in valid_axes:
                errors.append(f"{where('grid')}: sweep axis {axis!r} is not a config key{suggest(axis_key, valid_axes)}")
                continue
            _set_dotted(d, axis_key, value)
        run_errors: list[str] = []
        # registry geometry for the chosen model, unless the spec/--set gives the field explicitly
        model = d.setdefault("model", {})
        if isinstance(model, dict) and isinstance(model.get("name", "roma_base"), str):
            for k, v in _registry_geometry(model.get("name", "roma_base")).items():
                model.setdefault(k, v)
        for sect in ("probes", "dense"):  # probe root "" = the pretraining data root
            items = d.get("eval", {}).get(sect) if isinstance(d.get("eval"), dict) else None
            for item in items if isinstance(items, list) else []:
                if sect == "probes" and isinstance(item, dict) and not item.get("root"):
                    item["root"] = d.get("data", {}).get("root", "")
        d["sweep"] = [[a, v] for a, v in combo]
        cfg = None
        try:
            cfg = build_config(d, where, META_KEYS)
        except ConfigError as e:
            run_errors += e.problems
        if cfg is not None:
            cfg = _with_resolved_paths(cfg)
            notes += advisories(cfg, where)
            if dry_run:
                values = check_config(cfg, where, False)
                run_errors += values
                warnings += [p for p in check_config(cfg, where, True, counts) if p not in values]
            else:
                run_errors += check_config(cfg, where, check_data, counts)
            if not run_errors:
                cfg = _with_largest_subset(cfg, where, counts, run_errors, notes if dry_run else None)
            # the run id holds the data's checksum, not its path: status and ui need it too (cached)
            if not run_errors and root_exists(cfg.data.root):
                cfg, checksum_errors = with_data_checksum(cfg, where)
                # only a real launch refuses data it cannot fingerprint; a dry run, status and ui warn
                (run_errors if check_data and not dry_run else warnings).extend(checksum_errors)
            runs.append(cfg)
        errors += run_errors
    env_keys = {m.group(1) for e in errors + warnings
                if (m := re.search(r": ([\w.\[\]]+): environment variable", e))}
    errors, warnings = ([e for e in problems if "environment variable" in e or not any(f": {k}: " in e for k in env_keys)]
                        for problems in (errors, warnings))
    if not errors:
        errors += _check_unique(runs, str(path))
    if errors:
        raise ConfigError(errors)
    resources_set = raw.get("resources", {}) if isinstance(raw.get("resources"), dict) else {}
    return Spec(name=path.stem, path=path, runs=runs, description=str(meta.get("description", "")),
                cluster=cluster, parallelism=parallelism, resources_set=dict(resources_set),
                fallback_data=meta.get("fallback_data"), warnings=list(dict.fromkeys(warnings)),
                data_counts=counts, notes=list(dict.fromkeys(notes)))


def _with_resolved_paths(cfg: RunConfig) -> RunConfig:
    r = dataclasses.replace
    return r(cfg, output_root=_resolve_path(cfg.output_root),
             data=r(cfg.data, root=_resolve_path(cfg.data.root)),
             eval=r(cfg.eval, probes=tuple(r(p, root=_resolve_path(p.root)) for p in cfg.eval.probes),
                    dense=tuple(r(x, root=_resolve_path(x.root)) for x in cfg.eval.dense)))


def _with_largest_subset(cfg: RunConfig, where, counts: dict, errors: list[str],
                         notes: list[str] | None) -> RunConfig:
    """`data.subset: null` beside held-out images drawn from data.root -> the largest subset, a number:
    the source less its held-out images (roma.data.heldout.largest_subset), counted from the data, or,
    where there is none yet (a dry run), from data.nominal_total. The run's name and id carry the real
    size (3,999,488 on a 4,000,000-image source with 512 held out: `roma_base-3.999M-seed0`)."""
    from roma.data.heldout import draws_from_source, largest_subset

    d = cfg.data
    if d.subset is not None or not draws_from_source(d):
        return cfg
    total, source = None, "data.root"
    if root_exists(d.root):
        if d.root not in counts:
            try:
                counts[d.root] = count_images(d.root)
            except (OSError, ValueError) as e:
                counts[d.root] = f"cannot list the images of {d.root}: {e}"
        total = counts[d.root] if isinstance(counts[d.root], int) else None
        if total is not None and d.nominal_total is not None and total != d.nominal_total and notes is not None:
            notes.append(f"{where('data.nominal_total')}: data.nominal_total: {d.nominal_total:,} images, but "
                            f"{d.root} holds {total:,}: the largest subset is {total - d.heldout_size:,} of them")
    if total is None and d.nominal_total is not None:  # no data yet, or data a dry run cannot list
        total, source = d.nominal_total, "data.nominal_total"
    if total is None:
        return cfg  # no data and no nominal size: the plan says the data size is unknown
    try:
        n = largest_subset(d, total)
    except ValueError as e:
        errors.append(f"{where(source)}: {source}: {e}")
        return cfg
    if source == "data.nominal_total" and notes is not None:
        notes.append(f"{where('data.subset')}: data.subset: null, the largest subset, is planned from "
                     f"data.nominal_total: {total:,} less {d.heldout_size} held-out images = {n:,}; a launch "
                     "counts the data")
    return dataclasses.replace(cfg, data=dataclasses.replace(d, subset=n))


def _check_unique(runs: list[RunConfig], origin: str) -> list[str]:
    errs, by_id, by_name = [], {}, {}
    for cfg in runs:
        rid, name = cfg.run_id, run_name(cfg)
        if rid in by_id:
            errs.append(f"{origin}: sweep values {dict(by_id[rid].sweep)} and {dict(cfg.sweep)} give the same "
                        f"config (run id {rid}): drop the duplicate axis value")
        elif name in by_name:
            errs.append(f"{origin}: runs {by_name[name].run_id} and {rid} share the name {name!r}: "
                        "add a `label` axis to the sweep")
        by_id.setdefault(rid, cfg)
        by_name.setdefault(name, cfg)
    return errs


def select(runs: list[RunConfig], pattern: str | None) -> list[RunConfig]:
    """Runs whose name or id matches the fnmatch pattern (all when pattern is None)."""
    if not pattern:
        return list(runs)
    return [r for r in runs if fnmatch.fnmatch(run_name(r), pattern) or fnmatch.fnmatch(r.run_id, pattern)]
