"""The recipe's batch and schedule, and how one cluster's devices carry them.

    lay = layout(global_batch=256, world_size=4, max_device_batch=64)  # device_batch 64, accum 1
    lay = layout(256, 1, 64)                                          # device_batch 64, accum 4
    sch = schedule(train_cfg, data_size=62_500)   # steps_per_epoch 244, total 97,600, images_seen 24,985,600

`train.global_batch` (images per optimizer step over all devices) is the recipe and goes into the
run id; the world size and the per-device memory bound (`train.max_device_batch`) only decide how
each rank's share is cut into micro-batches (gradient accumulation), so they stay out of it. The
schedule (steps, warm-up, images seen) depends on the global batch and the data size only: the
launcher's dry run and the training loop compute it with this one function.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from roma.config import TrainConfig

BATCH_KEYS = ("image", "target", "region", "angle")  # what a collated batch gives the model


class BatchLayoutError(ValueError):
    """The global batch cannot be split evenly over the ranks."""


@dataclass(frozen=True)
class BatchLayout:
    global_batch: int  # images per optimizer step, all ranks together
    world_size: int
    device_batch: int  # images per rank per micro-step (the DataLoader batch)
    accum_steps: int  # micro-steps per optimizer step

    @property
    def per_rank(self) -> int:
        """Images one rank contributes to each optimizer step."""
        return self.device_batch * self.accum_steps


def layout(global_batch: int, world_size: int, max_device_batch: int) -> BatchLayout:
    """Split `global_batch` over `world_size` ranks in micro-batches of at most `max_device_batch`.

    Every rank and micro-step holds the same number of images, so the mean loss of one optimizer
    step is the mean over the same `global_batch` images whatever the world size. The fewest
    micro-steps that fit the bound are used (a smaller device batch when the share does not
    divide: 96 per rank with a bound of 64 -> 2 x 48)."""
    for name, v in (("global batch", global_batch), ("world size", world_size),
                    ("max device batch", max_device_batch)):
        if not isinstance(v, int) or v < 1:
            raise BatchLayoutError(f"{name} must be a positive integer, got {v!r}")
    if global_batch % world_size:
        raise BatchLayoutError(f"train.global_batch {global_batch} cannot be split evenly over {world_size} ranks: "
                               f"choose a world size that divides it (e.g. {_divisors_near(global_batch, world_size)})")
    share = global_batch // world_size
    accum = math.ceil(share / max_device_batch)
    while share % accum:
        accum += 1
    return BatchLayout(global_batch, world_size, share // accum, accum)


def _divisors_near(n: int, k: int) -> str:
    divs = [d for d in range(1, n + 1) if n % d == 0]
    near = sorted(divs, key=lambda d: (abs(d - k), d))[:2]
    return " or ".join(str(d) for d in sorted(near))


@dataclass(frozen=True)
class Schedule:
    data_size: int  # unique images
    steps_per_epoch: int
    total_steps: int  # train.epochs x steps_per_epoch, capped by train.max_steps
    warmup_steps: int
    images_seen: int  # total_steps x global_batch: images drawn (with repeats across epochs)


def schedule(cfg: TrainConfig, data_size: int) -> Schedule:
    """Optimizer steps of a run over `data_size` images: an epoch is data_size // global_batch steps
    (the tail of each shuffled epoch is dropped, as the sampler does). With train.steps every data
    size gets exactly that many steps (the loop runs epochs until then) and a warm-up of
    warmup_epochs / epochs of them: one schedule whatever the data size."""
    steps_per_epoch = data_size // cfg.global_batch
    if steps_per_epoch < 1:
        raise ValueError(f"a dataset of {data_size} images holds no full step of train.global_batch = "
                         f"{cfg.global_batch} images")
    if cfg.steps:
        total = cfg.steps
        warmup = min(round(cfg.steps * cfg.warmup_epochs / cfg.epochs), total)
    else:
        total = cfg.epochs * steps_per_epoch
        total = min(total, cfg.max_steps) if cfg.max_steps else total
        warmup = min(round(cfg.warmup_epochs * steps_per_epoch), total)
    return Schedule(data_size, steps_per_epoch, total, warmup, total * cfg.global_batch)


def model_inputs(batch: dict[str, Any], device: torch.device) -> dict[str, torch.Tensor | None]:
    """A collated batch -> the model's keyword arguments on `device` (missing keys -> None)."""
    out = {}
    for k in BATCH_KEYS:
        v = batch.get(k)
        out["images" if k == "image" else k] = v.to(device, non_blocking=True) if v is not None else None
    return out
