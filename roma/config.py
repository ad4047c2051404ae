"""Typed configuration of one run: what every stage (data, model, training, evaluation) reads.

A spec file (experiments/specs/*.yaml) is composed and expanded by `roma.spec`, each run is
built and checked by `roma.validation`; each stage then takes the section it needs as an explicit
argument. Everything here is a frozen dataclass of plain values, so a config can be hashed into a
stable run id, written to YAML and read back unchanged.

CHOICES is the one table of allowed values for the enumerated keys: validation checks specs
against it, and the code that branches on a value (precision, probe protocol, dense task) reads it.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# dense task -> its kind: change detection ("cd": two dates, a UNet decoder) or segmentation ("seg")
DENSE_TASK_KIND: dict[str, str] = {"oscd": "cd", "levir": "cd", "spacenet": "seg", "segfolder": "seg"}

# key -> allowed values; every consumer (validation, the training loop, evaluations) reads this table
CHOICES: dict[str, tuple[str, ...]] = {
    "ares.descriptor": ("lbp", "hog", "wavelet"),
    "ares.target": ("rotated", "original"),
    "ares.angle_embed": ("shared", "binned"),
    "train.precision": ("auto", "bf16", "fp16", "fp32"),
    "eval.probes.protocol": ("fast", "full"),
    "eval.probes.scan": ("uni", "v3"),
    "eval.probes.readout": ("mean", "cls"),
    "eval.dense.task": tuple(DENSE_TASK_KIND),
    "eval.dense.scan": ("uni", "v3"),
    "eval.dense.precision": ("auto", "bf16", "fp32"),  # no loss scaler in the dense loop: no fp16
}

# Downstream datasets of the paper specs -> the environment variable that gives each one's root
# (spec base "paper", the launcher's missing-data messages and roma.eval.plan.evaluation_data read it).
EVAL_DATA_ENV: dict[str, str] = {"aid": "ROMA_AID", "ucm": "ROMA_UCM", "oscd": "ROMA_OSCD", "spacenet": "ROMA_SPACENET"}

# Fields that say where or how a run executes, not what it computes: left out of the id so that
# moving a study or changing the cluster does not make finished work look new.
# Dotted keys name a field of a section (the memory bound changes how a step is cut into
# micro-batches, not the step; data.nominal_total only plans a study before its data exists).
NOT_IN_ID = ("output_root", "tracking_uri", "resources", "sweep", "experiment", "train.max_device_batch",
             "data.nominal_total")
# Where data lives, not what it is: left out of the id too. The pretraining data is in the id by
# content (data.checksum: its manifest's sha256, with data.subset and data.subset_seed; a config
# that nobody gave a checksum, built without the launcher, keeps data.root instead); an
# evaluation's data by its name (probe `dataset`, dense `task`).
PATHS_NOT_IN_ID = {"data": ("root", "heldout_root"), "eval.probes": ("root",), "eval.dense": ("root", "labels_root")}
# A data path leaves the id only where the content checksum that replaces it is there.
DATA_PATH_CHECKSUM = {"root": "checksum", "heldout_root": "heldout_checksum"}
# Keys added after the built-in run ids were pinned (tests/data/spec_run_ids.json): left out of the id
# while at this value (their default), so a run that does not use them keeps its id and its finished work.
ID_OMITTED_AT_DEFAULT: dict[str, Any] = {"train.steps": None}


@dataclass(frozen=True)
class ModelConfig:
    name: str = "roma_base"  # a name from roma.models.registry
    img_size: int = 192  # pretraining resolution (px)
    patch_size: int = 16
    cluster_size: int = 4  # a prediction cluster is cluster_size x cluster_size patches
    decoder_dim: int = 512
    decoder_depth: int = 4
    decoder_heads: int = 8


@dataclass(frozen=True)
class AresConfig:
    enabled: bool = True
    descriptor: str = "lbp"  # lbp | hog | wavelet
    region_sizes: tuple[int, ...] = (6, 4, 2)  # candidate square regions, in patches, largest first
    max_angle: float = 45.0  # uniform angle in [-max_angle, max_angle] degrees
    angles: tuple[float, ...] = ()  # a discrete set of angles instead (empty: continuous)
    p: float = 1.0  # probability that an image is rotated at all
    target: str = "rotated"  # rotated (as released) | original
    # shared: one learnable vector for every angle, as released (RoMA/models_mamba.py; there it lands on
    # fixed diagonal tokens, here on the rotated region's) | binned: one per angle bin (ours; the micro base)
    angle_embed: str = "shared"
    angle_bins: int = 8


@dataclass(frozen=True)
class MspConfig:
    enabled: bool = True
    scales: tuple[int, ...] = (6,)  # block sizes in patches, e.g. (2, 4, 6)
    weight: float = 0.1  # lambda: total = L_token + weight * mean over scales of L_block
    hidden_dim: int = 1024  # the block head's MLP hidden width


@dataclass(frozen=True)
class DataConfig:
    root: str = ""  # a folder tree, a manifest (.txt/.csv/.parquet) or a shard pattern (*.tar)
    # sha256 of the run's image manifest (roma.data.fingerprint): what the run id holds instead of
    # `root`. The launcher fills it in from the data; a spec that sets it pins the data (a launch on
    # other data is refused), and the job refuses data that no longer gives it.
    checksum: str = ""
    # number of images (nested subsets, see roma.data.subsets). None: every image, or, with held-out
    # images drawn from `root`, the largest subset beside them: the source less heldout_size
    # (roma.data.heldout.largest_subset; a spec's `subset: null` becomes that number, roma.spec)
    subset: int | None = None
    subset_seed: int = 0
    max_bad_fraction: float = 0.01
    num_workers: int = 2
    crop_scale: tuple[float, float] = (0.2, 1.0)
    hflip: bool = True
    # The held-out images of the pretraining objective (val_loss; roma.data.heldout): heldout_size
    # images (0: none), from heldout_root, a source disjoint from `root` (the micro study: the
    # pool's complement), or, with heldout_root "", the last heldout_size images of `root` in
    # subset_seed's order, which no nested subset ever reaches (data.subset <= total - heldout_size).
    heldout_root: str = ""
    heldout_size: int = 0
    heldout_checksum: str = ""  # sha256 of the held-out keys, filled in by the launcher (in the id)
    # the images `root` is meant to hold (the paper: 4,000,000): what a dry run without the data sizes
    # subset null from. Planning only: the data's own count wins when it is there; not in the id
    nominal_total: int | None = None


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 400
    max_steps: int | None = None  # stop after this many optimizer steps (micro runs, tests)
    # A fixed optimizer-step budget for every data size instead of `epochs` passes (the fixed-steps
    # control of a data axis: data and steps not confounded): as many epochs as the steps take, the
    # last one cut short; warm-up keeps the recipe's share, warmup_epochs / epochs of the steps.
    # roma.train.batching.schedule reads it (the loop and the dry run). null: epochs x steps per epoch.
    steps: int | None = None
    # images per optimizer step over all devices: the recipe (paper 256), in the run id; the
    # per-device batch and gradient accumulation follow from the world size (roma.train.batching)
    global_batch: int = 256
    # most images one device holds per micro-step (its memory bound); execution only, not in the id.
    # 64: roma_base at 192 px peaks at 12.3 GiB on an H200 (docs/benchmarks.md), roma_large about 3x that
    max_device_batch: int = 64
    blr: float = 1.5e-4  # lr = blr * global_batch / 256
    min_lr: float = 0.0
    warmup_epochs: float = 40.0
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.95)
    clip_grad: float = 3.0
    precision: str = "auto"  # auto (bf16 on CUDA, fp32 on CPU) | bf16 | fp16 | fp32
    seed: int = 0
    ckpt_every_steps: int = 200
    keep_epochs: tuple[int, ...] = ()
    log_every_steps: int = 10
    # held-out loss every this many steps and at the last one (0: at the last step only); needs data.heldout_size
    val_every_steps: int = 0


@dataclass(frozen=True)
class ProbeConfig:
    """Linear probing of the frozen encoder on a folder-per-class dataset (AID, UCM)."""

    dataset: str = "aid"  # metric prefix: aid_oa_tr50, ucm_oa_tr50, ...
    root: str = ""
    train_ratios: tuple[float, ...] = (0.5,)
    protocol: str = "fast"  # fast (cached features) | full (the paper's 200-epoch recipe)
    img_size: int = 0  # 0: the pretraining resolution
    scan: str = "uni"  # uni | v3
    readout: str = "mean"  # mean | cls
    seeds: tuple[int, ...] = (0,)
    epochs: int = 100
    batch_size: int = 256
    blr: float = 1.5e-3
    split_seed: int = 0
    weight_decay: float = 0.05
    warmup_epochs: float = 5.0
    min_lr: float = 1e-6
    label_smoothing: float = 0.1
    val_fraction: float = 0.1  # of each class's training part, held out to choose lr / epochs
    lr_grid: tuple[float, ...] = (0.3, 1.0, 3.0, 10.0, 30.0)  # fast protocol: lr multipliers tried on val
    eval_every: int = 5  # epochs between validation checks
    max_per_class: int = 0  # 0: every image; n: a seeded n-image subset per class (smoke runs)
    extract_batch_size: int = 128
    num_workers: int = 0  # DataLoader workers for image decoding
    max_bad_fraction: float = 0.01  # unreadable images skipped, listed and counted, as in pretraining (data.*)


@dataclass(frozen=True)
class DenseConfig:
    """Change detection (OSCD / LEVIR-CD folders) or building segmentation (SpaceNet v1)."""

    task: str = "oscd"  # oscd | levir | spacenet | segfolder
    root: str = ""
    img_size: int = 256
    crop_size: int = 256
    scan: str = "v3"
    epochs: int = 100
    max_steps: int | None = None
    batch_size: int = 8
    lr: float = 6e-5
    layer_decay: float = 0.75
    seed: int = 0
    labels_root: str = ""  # OSCD: folder of <city>/cm/cm.png ("" = root)
    split_seed: int = 0  # fixed splits: held-out val cities (OSCD), val/test ids (SpaceNet, segfolder)
    val_fraction: float = 0.2  # of the training part, for model selection (never the test split)
    test_fraction: float = 0.2  # datasets without a released test split (SpaceNet v1, segfolder)
    weight_decay: float = 0.05
    warmup_epochs: float = 5.0
    min_lr: float = 0.0
    decoder_channels: tuple[int, ...] = (512, 256, 128, 64)  # change detection UNet blocks
    head_channels: int = 512  # segmentation UperNet width (the FCN auxiliary head uses half)
    eval_every: int = 5  # epochs between validation passes (and at the last step)
    slide_stride: int = 0  # sliding-window stride in px for val/test (0: crop_size // 2)
    precision: str = "auto"  # auto (bf16 on CUDA, fp32 on CPU) | bf16 | fp16 | fp32
    num_workers: int = 2


@dataclass(frozen=True)
class EvalConfig:
    probes: tuple[ProbeConfig, ...] = ()
    dense: tuple[DenseConfig, ...] = ()
    random_init_baseline: bool = False  # also probe a randomly initialised encoder


@dataclass(frozen=True)
class ResourcesConfig:
    """What one run asks of a cluster; cluster profiles in slurm/profiles supply the defaults."""

    nodes: int = 1
    gpus_per_node: int = 1
    cpus_per_task: int = 8
    mem_gb: int = 64
    time_min: int = 24 * 60
    partition: str = ""
    account: str = ""
    qos: str = ""
    constraint: str = ""
    signal_delay_s: int = 120
    setup: tuple[str, ...] = ()


@dataclass(frozen=True)
class RunConfig:
    experiment: str = "default"  # the spec name: MLflow experiment and output folder
    output_root: str = "outputs"
    tracking_uri: str = ""  # "": sqlite:///<output_root>/<experiment>/mlflow.db
    model: ModelConfig = field(default_factory=ModelConfig)
    ares: AresConfig = field(default_factory=AresConfig)
    msp: MspConfig = field(default_factory=MspConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    sweep: tuple[tuple[str, Any], ...] = ()  # the sweep-axis values that made this run

    def to_dict(self) -> dict[str, Any]:
        return to_plain(self)

    @property
    def run_dir(self) -> Path:
        """<output_root>/<experiment>/<run_id>: everything a run writes, and its status file."""
        return Path(self.output_root) / self.experiment / self.run_id

    def identity(self) -> dict[str, Any]:
        """What this run computes: the plain config without NOT_IN_ID and PATHS_NOT_IN_ID."""
        return identity(self.to_dict())

    @property
    def run_id(self) -> str:
        """Stable 10-hex-digit id of what this run computes."""
        blob = json.dumps(_integral_floats_as_ints(self.identity()), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:10]


def identity(plain: dict[str, Any]) -> dict[str, Any]:
    """A plain config dict (RunConfig.to_dict(), or one saved in a checkpoint) without NOT_IN_ID
    and PATHS_NOT_IN_ID: what the run id hashes and a resumed checkpoint must match."""
    out = {k: v for k, v in plain.items() if k not in NOT_IN_ID}
    for key, default in ID_OMITTED_AT_DEFAULT.items():
        section, _, name = key.partition(".")
        if isinstance(out.get(section), dict) and out[section].get(name, default) == default:
            out[section] = {k: v for k, v in out[section].items() if k != name}
    for key in NOT_IN_ID:
        section, _, name = key.partition(".")
        if name and isinstance(out.get(section), dict):
            out[section] = {k: v for k, v in out[section].items() if k != name}
    for section, fields in PATHS_NOT_IN_ID.items():
        head, _, tail = section.partition(".")
        if head not in out:
            continue
        out[head] = dict(out[head])
        if section == "data":  # a config that nobody gave a checksum keeps the path in its id
            fields = tuple(f for f in fields if out["data"].get(DATA_PATH_CHECKSUM[f]))
        if not tail:
            out[head] = {k: v for k, v in out[head].items() if k not in fields}
        elif isinstance(out[head].get(tail), list):
            out[head][tail] = [{k: v for k, v in item.items() if k not in fields} for item in out[head][tail]]
    return out


def to_plain(obj: Any) -> Any:
    """Dataclasses -> dicts, tuples -> lists, recursively (YAML/JSON-ready)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_plain(v) for k, v in obj.items()}
    return obj


def _integral_floats_as_ints(obj: Any) -> Any:
    """1.0 -> 1, so that a value written as 1 in one spec and 1.0 in another gives one run id."""
    if isinstance(obj, float) and obj.is_integer():
        return int(obj)
    if isinstance(obj, list):
        return [_integral_floats_as_ints(v) for v in obj]
    if isinstance(obj, dict):
        return {k: _integral_floats_as_ints(v) for k, v in obj.items()}
    return obj


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists are kept as values (MLflow params, run tables)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out
