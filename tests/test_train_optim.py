"""Optimizer parameter groups, the lr scaling rule and the warm-up + cosine schedule."""
from __future__ import annotations

import math

import pytest
import torch

from roma.config import AresConfig, MspConfig, TrainConfig
from roma.models import create_model
from roma.train.optim import WarmupCosine, base_lr, build_optimizer, lr_at, param_groups


@pytest.fixture(scope="module")
def model():
    return create_model("roma_micro_tiny", img_size=32, patch_size=8, cluster_size=2,
                        ares=AresConfig(enabled=True, angle_embed="binned"), msp=MspConfig(scales=(2,)))


def test_param_groups_membership(model):
    decay, no_decay = param_groups(model, 0.05)
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    ids = {id(p) for p in no_decay["params"]}
    names = dict(model.named_parameters())
    skipped = {n for n, p in names.items() if id(p) in ids}
    decayed = {n for n, p in names.items() if id(p) not in ids}
    for n in ("encoder.layers.0.mixer.A_log", "encoder.layers.0.mixer.D", "encoder.layers.0.mixer.dt_proj.bias",
              "encoder.angle_embed.weight", "decoder.ar_token", "encoder.layers.0.norm1.weight",
              "encoder.patch_embed.bias", "encoder.tap_norms.0.bias", "decoder.norm.weight"):
        assert n in skipped, n
    for n in ("encoder.layers.0.mixer.in_proj.weight", "encoder.layers.0.mixer.x_proj.weight",
              "encoder.layers.0.mixer.dt_proj.weight", "encoder.patch_embed.weight", "decoder.head.weight",
              "encoder.layers.0.mixer.out_proj.weight"):
        assert n in decayed, n
    assert all(names[n].ndim >= 2 for n in decayed)
    assert len(decay["params"]) + len(no_decay["params"]) == len(names)


def test_lr_scaling_rule_and_betas(model):
    cfg = TrainConfig(global_batch=512, max_device_batch=64, blr=1.5e-4)
    assert base_lr(cfg) == pytest.approx(1.5e-4 * 512 / 256)  # the recipe's batch: no world size in it
    opt = build_optimizer(model, cfg)
    assert opt.defaults["betas"] == (0.9, 0.95)
    assert all(g["lr"] == pytest.approx(3e-4) for g in opt.param_groups)


def test_schedule_values_and_state_dict():
    p = torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.AdamW([p], lr=1.0)
    sched = WarmupCosine(opt, warmup_steps=4, total_steps=12, min_lr=0.1)
    lrs = []
    for _ in range(12):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])  # linear warm-up, per iteration
    assert lrs[4] == pytest.approx(1.0)  # cosine starts at the peak
    mid = 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 4 / 8))
    assert lrs[8] == pytest.approx(mid)
    assert all(a >= b for a, b in zip(lrs[3:], lrs[4:]))  # monotone after the warm-up
    assert lr_at(12, 1.0, 4, 12, 0.1) == pytest.approx(0.1)  # ends at min_lr

    # a fresh scheduler loaded from the state continues identically
    opt2 = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], lr=1.0)
    s2 = WarmupCosine(opt2, 4, 12, 0.1)
    opt2.load_state_dict(opt.state_dict())
    s2.load_state_dict(sched.state_dict())
    sched.step()
    s2.step()
    assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]


def test_schedule_rejects_bad_lengths():
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(ValueError, match="total_steps"):
        WarmupCosine(opt, 0, 0)


def test_one_schedule_reproduces_each_loops_former_lr_bitwise():
    """lr_at serves pretraining, the probe and dense fine-tuning; each loop's lr sequence is the one it
    had with its own copy of the schedule (references below: MAE's lr_sched for the probe, the dense
    loop's factor), so measured results stay reproducible."""
    def mae_lr_sched(step, total, warmup, lr, min_lr):  # the probe's former schedule
        if step < warmup:
            return lr * step / max(warmup, 1e-8)
        frac = (step - warmup) / max(total - warmup, 1e-8)
        return min_lr + (lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * min(frac, 1.0)))

    def dense_factor(step, total, warmup, min_ratio):  # the dense loop's former factor
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    for total, warmup_epochs, spe in [(90, 5.0, 3), (12, 2.5, 4), (7, 10.0, 2), (50, 0.0, 5)]:
        warmup = warmup_epochs * spe
        for step in range(total + 1):
            assert lr_at(step, 3e-3, warmup, total, 1e-6, start=0) == mae_lr_sched(step, total, warmup, 3e-3, 1e-6)
    for total, warmup, min_ratio in [(100, 10, 0.0), (100, 10, 0.01), (8, 8, 0.1), (5, 0, 0.2), (3, 6, 0.0)]:
        for step in range(total + 1):
            assert lr_at(step, 1.0, warmup, total, min_ratio) == dense_factor(step, total, warmup, min_ratio)
