"""Cluster profiles: slurm/profiles/<name>.yaml -> what a SLURM job asks for by default.

    description: one-node test cluster        # free text
    partition: debug                          # any ResourcesConfig field: nodes, gpus_per_node,
    gpus_per_node: 0                          #   cpus_per_task, mem_gb, time_min, partition, account,
    cpus_per_task: 1                          #   qos, constraint, signal_delay_s, setup (list of lines)
    setup: ["source /opt/venv/bin/activate"]
    gpu_type: cpu                             # the device as experiments/throughput.csv names it (h100, a100, ...)
    parallelism: 4                            # default job-array concurrency cap
    additional: {exclusive: true}             # extra sbatch options passed to submitit as is

The fields may also sit under a `resources:` key. A spec's own `resources:` overrides the profile.
"""
from __future__ import annotations

import dataclasses
import difflib
import re
from pathlib import Path
from typing import Any

import yaml

from roma import yamlio
from roma.config import ResourcesConfig

PROFILE_DIR = Path(__file__).resolve().parents[2] / "slurm" / "profiles"
RESOURCE_FIELDS = [f.name for f in dataclasses.fields(ResourcesConfig)]
PROFILE_KEYS = ("description", "gpu_type", "parallelism", "additional", "resources", *RESOURCE_FIELDS)
GPU_TYPE = re.compile(r"[a-z0-9][a-z0-9_.-]*")


def profile_path(name: str) -> Path:
    p = Path(name)
    if p.suffix in (".yaml", ".yml"):
        if not p.exists():
            raise FileNotFoundError(f"cluster profile file {p} not found")
        return p
    cand = PROFILE_DIR / f"{name}.yaml"
    if not cand.exists():
        known = sorted(x.stem for x in PROFILE_DIR.glob("*.yaml"))
        close = difflib.get_close_matches(name, known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise FileNotFoundError(f"no cluster profile {name!r} in {PROFILE_DIR}{hint}; known: {', '.join(known) or 'none'}")
    return cand


def load_profile(name: str) -> dict[str, Any]:
    """-> {"name", "path", "resources": {field: value}, "parallelism": int, "additional": dict}."""
    path = profile_path(name)
    try:
        raw = yamlio.load(path.read_text(encoding="utf-8")) or {}
    except (UnicodeDecodeError, yaml.YAMLError) as e:
        raise ValueError(f"{path}: cannot read cluster profile: {e}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: a cluster profile must be a mapping")
    for key in raw:
        if key not in PROFILE_KEYS:
            close = difflib.get_close_matches(str(key), PROFILE_KEYS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"{path}: unknown key {key!r}{hint}")
    res = {k: raw[k] for k in RESOURCE_FIELDS if k in raw}
    nested = raw.get("resources") or {}
    for key in nested:
        if key not in RESOURCE_FIELDS:
            raise ValueError(f"{path}: resources: unknown key {key!r}")
    res.update(nested)
    if "setup" in res:
        res["setup"] = tuple(res["setup"])
    return {"name": path.stem, "path": str(path), "resources": res, "gpu_type": _gpu_type(path, raw, res),
            "parallelism": int(raw.get("parallelism", 0)), "additional": dict(raw.get("additional") or {})}


def _gpu_type(path: Path, raw: dict[str, Any], res: dict[str, Any]) -> str | None:
    """The profile's device type, as the throughput table (experiments/throughput.csv) names it:
    "cpu" exactly when the profile asks for no GPU. None when the profile does not say."""
    value = raw.get("gpu_type")
    if value is None:
        return None
    if not isinstance(value, str) or not GPU_TYPE.fullmatch(value.strip().lower()):
        raise ValueError(f"{path}: gpu_type must be a name like h100, a100 or cpu, got {value!r}")
    value = value.strip().lower()
    gpus = res.get("gpus_per_node")
    if gpus is not None and (value == "cpu") != (int(gpus) == 0):
        raise ValueError(f"{path}: gpu_type {value!r} with gpus_per_node {gpus}: use gpu_type cpu exactly when "
                         f"gpus_per_node is 0")
    return value
