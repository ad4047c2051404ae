"""The linear probe: BatchNorm1d(affine=False) + Linear on frozen features, and its training loops.

- `fit_head`: minibatch AdamW on feature tensors (the fast protocol), with warm-up + cosine lr and
  validation accuracy every `eval_every` epochs;
- `select_and_fit`: picks (lr, epochs) by validation accuracy, then refits on train + val with the
  chosen pair and reports test accuracy once;
- `fit_head_on_images`: the paper's protocol, with the frozen encoder run on augmented images at
  every step (val/test features come from the cache: the encoder is frozen and eval is deterministic).
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from roma.train.optim import lr_at


class LinearHead(nn.Module):
    """BatchNorm1d(d, affine=False, eps=1e-6) + Linear(d, C), weights trunc_normal(2e-5) (RoMA/MAE)."""

    def __init__(self, dim: int, n_classes: int):
        super().__init__()
        self.norm = nn.BatchNorm1d(dim, affine=False, eps=1e-6)
        self.fc = nn.Linear(dim, n_classes)
        nn.init.trunc_normal_(self.fc.weight, std=2e-5)
        nn.init.zeros_(self.fc.bias)

    def forward(self, x):  # (B, d) -> (B, C)
        return self.fc(self.norm(x))


def accuracy(head: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 4096) -> float:
    """Top-1 accuracy in percent."""
    head.eval()
    correct = sum((head(x[i:i + batch]).argmax(1) == y[i:i + batch]).sum().item() for i in range(0, len(y), batch))
    return 100.0 * correct / max(len(y), 1)


@contextlib.contextmanager
def cpu_threads(n: int, device: torch.device):
    """Run with n intra-op threads on CPU: a linear head's tiny matmuls only lose to threading
    overhead (10x slower with 2 threads on a busy 2-core machine, measured)."""
    if device.type != "cpu":
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


@dataclass
class HeadFit:
    head: LinearHead
    history: list[tuple[int, float]] = field(default_factory=list)  # (epoch, val accuracy)


def fit_head(x: torch.Tensor, y: torch.Tensor, n_classes: int, lr: float, epochs: int, batch_size: int,
             weight_decay: float, seed: int, warmup_epochs: float = 5.0, min_lr: float = 1e-6,
             label_smoothing: float = 0.1, x_val=None, y_val=None, eval_every: int = 5,
             stop_epoch: int | None = None) -> HeadFit:
    """Train a LinearHead on features x (N, d), labels y (N,) with AdamW.

    The schedule spans `epochs`; stop_epoch < epochs trains the same trajectory but stops early
    (the refit after choosing an epoch by validation).
    """
    if len(x) != len(y):
        raise ValueError(f"{len(x)} feature rows but {len(y)} labels")
    with cpu_threads(1, x.device):
        return _fit_head(x, y, n_classes, lr, epochs, batch_size, weight_decay, seed, warmup_epochs, min_lr,
                         label_smoothing, x_val, y_val, eval_every, stop_epoch)


def _fit_head(x, y, n_classes, lr, epochs, batch_size, weight_decay, seed, warmup_epochs, min_lr,
              label_smoothing, x_val, y_val, eval_every, stop_epoch) -> HeadFit:
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = LinearHead(x.shape[1], n_classes).to(x.device)
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    steps_per_epoch = max(1, math.ceil(len(y) / batch_size))
    total, warmup = epochs * steps_per_epoch, warmup_epochs * steps_per_epoch
    fit, step = HeadFit(head), 0
    for epoch in range(1, (stop_epoch or epochs) + 1):
        head.train()
        order = torch.randperm(len(y), generator=g).to(x.device)
        for i in range(0, len(y), batch_size):
            idx = order[i:i + batch_size]
            if len(idx) < 2:  # BatchNorm needs two samples
                continue
            for group in opt.param_groups:
                group["lr"] = lr_at(step, lr, warmup, total, min_lr, start=0)
            loss = F.cross_entropy(head(x[idx]), y[idx], label_smoothing=label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
        if x_val is not None and (epoch % eval_every == 0 or epoch == epochs):
            fit.history.append((epoch, accuracy(head, x_val, y_val)))
    return fit


@dataclass
class ProbeResult:
    test_acc: float
    val_acc: float
    lr: float
    epochs: int
    last_val_acc: float | None = None


def select_and_fit(feats: torch.Tensor, labels: torch.Tensor, train_idx, val_idx, test_idx, n_classes: int,
                   lrs, epochs: int, batch_size: int, weight_decay: float, seed: int,
                   warmup_epochs: float = 5.0, min_lr: float = 1e-6, label_smoothing: float = 0.1,
                   eval_every: int = 5) -> ProbeResult:
    """Fast protocol: choose lr and epoch count on val, refit on train + val, test once."""
    tr, va, te = (torch.as_tensor(list(i), dtype=torch.long) for i in (train_idx, val_idx, test_idx))
    common = dict(n_classes=n_classes, epochs=epochs, batch_size=batch_size, weight_decay=weight_decay,
                  seed=seed, warmup_epochs=warmup_epochs, min_lr=min_lr, label_smoothing=label_smoothing)
    best = None  # (val acc, -epoch, -lr): ties go to fewer epochs, then the smaller lr
    if len(va):
        for lr in lrs:
            fit = fit_head(feats[tr], labels[tr], lr=lr, x_val=feats[va], y_val=labels[va],
                           eval_every=eval_every, **common)
            for ep, acc in fit.history:
                if best is None or (acc, -ep, -lr) > (best[0], -best[1], -best[2]):
                    best = (acc, ep, lr)
    else:  # no validation part: the configured lr and schedule, nothing chosen
        best = (float("nan"), epochs, sorted(lrs)[len(lrs) // 2])
    val_acc, ep, lr = best
    full = torch.cat([tr, va])
    fit = fit_head(feats[full], labels[full], lr=lr, stop_epoch=ep, **common)
    return ProbeResult(accuracy(fit.head, feats[te], labels[te]), val_acc, lr, ep)


def fit_head_on_images(encoder, train_loader, x_val, y_val, x_test, y_test, n_classes: int, lr: float,
                       epochs: int, weight_decay: float, seed: int, device, warmup_epochs: float = 5.0,
                       min_lr: float = 1e-6, label_smoothing: float = 0.1, eval_every: int = 10,
                       log=print) -> ProbeResult:
    """Full protocol: the frozen encoder on augmented images every step; the head at the epoch of best
    validation accuracy is tested (and the last epoch's validation accuracy is reported)."""
    device = torch.device(device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = LinearHead(encoder.embed_dim, n_classes).to(device)
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    steps_per_epoch = len(train_loader)
    total, warmup = epochs * steps_per_epoch, warmup_epochs * steps_per_epoch
    amp = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if device.type == "cuda" else None
    x_val, y_val, x_test, y_test = (t.to(device) for t in (x_val, y_val, x_test, y_test))
    encoder.eval()
    best, best_state, step, last_val, loss = (-1.0, 0), None, 0, None, torch.tensor(float("nan"))
    for epoch in range(1, epochs + 1):
        train_loader.dataset.epoch = epoch  # new augmentations each epoch, reproducibly
        head.train()
        for x, y in train_loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if len(y) < 2:
                continue
            with torch.no_grad():
                if amp:
                    with amp():
                        f = encoder.forward_pooled(x)
                else:
                    f = encoder.forward_pooled(x)
            for group in opt.param_groups:
                group["lr"] = lr_at(step, lr, warmup, total, min_lr, start=0)
            loss = F.cross_entropy(head(f.float()), y, label_smoothing=label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
        if epoch % eval_every == 0 or epoch == epochs:
            last_val = accuracy(head, x_val, y_val) if len(y_val) else float("nan")
            log(f"[probe] epoch {epoch}/{epochs} loss {loss.item():.4f} val {last_val:.2f}")
            if best_state is None or last_val > best[0]:
                best = (last_val, epoch)
                best_state = {k: v.detach().clone() for k, v in head.state_dict().items()}
    head.load_state_dict(best_state)
    return ProbeResult(accuracy(head, x_test, y_test), best[0], lr, best[1], last_val)

