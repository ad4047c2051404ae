"""AdamW with decay / no-decay parameter groups and the warm-up + half-cycle cosine lr schedule.

    opt = build_optimizer(model, cfg.train)                 # lr = blr * global_batch / 256
    sched = WarmupCosine(opt, warmup_steps, total_steps, min_lr)
    sched.step()                                            # once per optimizer step

`lr_at` is the one warm-up + cosine schedule: pretraining (WarmupCosine), the linear probe
(roma.eval.probe) and the dense fine-tuning (roma.eval.dense.train) all set their lr from it.
"""
from __future__ import annotations

import math
import re

import torch
import torch.nn as nn

from roma.config import TrainConfig

# Parameter names (or name parts) that are never decayed: SSM dynamics (A_log, A_b_log, D, D_b),
# the dt bias, and learned tokens / embeddings (position, angle, AR query tokens).
_NO_DECAY_NAME = re.compile(r"(^|\.)(A\w*_log|D\w*|dt_proj\w*\.bias)$|pos_embed|angle_embed|_token|query")


def no_weight_decay(name: str, p: torch.Tensor) -> bool:
    """Biases, norms and every <=1-dim parameter, plus the names matched by _NO_DECAY_NAME."""
    return (p.ndim <= 1 or name.endswith(".bias") or "norm" in name
            or getattr(p, "_no_weight_decay", False) or bool(_NO_DECAY_NAME.search(name)))


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if no_weight_decay(name, p) else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay, "name": "decay"},
            {"params": no_decay, "weight_decay": 0.0, "name": "no_decay"}]


def base_lr(cfg: TrainConfig) -> float:
    """The linear scaling rule: lr = blr * global_batch / 256 (the recipe's batch: no world size in it)."""
    return cfg.blr * cfg.global_batch / 256


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    # foreach=False: the same kernels whatever the parameter list, so CPU runs are bitwise reproducible
    return torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=base_lr(cfg),
                             betas=tuple(cfg.betas), foreach=False)


class WarmupCosine(torch.optim.lr_scheduler.LambdaLR):
    """Per-iteration linear warm-up from 0 to each group's lr, then a half-cycle cosine to min_lr.

    Step i (0-based, the i-th optimizer step) uses factor(i); state_dict/load_state_dict come from
    LambdaLR (the lambda itself is rebuilt from the arguments, not pickled).
    """

    def __init__(self, optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int,
                 min_lr: float = 0.0, last_epoch: int = -1):
        if total_steps < 1:
            raise ValueError(f"total_steps must be >= 1, got {total_steps}")
        if warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
        self.warmup_steps, self.total_steps, self.min_lr = int(warmup_steps), int(total_steps), float(min_lr)
        peak = [g["lr"] for g in optimizer.param_groups] if last_epoch == -1 else \
            [g["initial_lr"] for g in optimizer.param_groups]
        lambdas = [self._factor_fn(lr) for lr in peak]
        super().__init__(optimizer, lambdas, last_epoch)

    def _factor_fn(self, peak: float):
        def factor(i: int) -> float:
            if peak <= 0:
                return 0.0
            return lr_at(i, peak, self.warmup_steps, self.total_steps, self.min_lr) / peak
        return factor


def lr_at(i: float, peak: float, warmup_steps: float, total_steps: float, min_lr: float = 0.0,
          start: int = 1) -> float:
    """The lr of optimizer step i (0-based): linear warm-up to `peak`, then half-cycle cosine to min_lr.

    Warm-up: peak * (i + start) / warmup_steps while i < warmup_steps. start=1 (pretraining, dense
    fine-tuning): the first step already moves; start=0: MAE's lr_sched, step 0 at lr 0, which the
    linear probe follows (its measured numbers were made with it). Steps may be fractional (a
    warm-up of 2.5 epochs). After warm-up the cosine runs over the remaining steps, min_lr at the end.
    """
    if i < warmup_steps:
        return peak * (i + start) / warmup_steps
    span = max(total_steps - warmup_steps, 1e-8)
    progress = min((i - warmup_steps) / span, 1.0)
    return min_lr + (peak - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))
