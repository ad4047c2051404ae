"""Fine-tuning loop shared by change detection and segmentation.

    metrics = fit_and_test(model, splits, cfg, out_dir, device, kind="cd")

- AdamW with layer-wise lr decay: encoder block i gets lr * decay^(depth - i), the patch embedding
  decay^(depth + 1), the heads and the final norm the full lr; no weight decay on biases, norms,
  A_log and D (Mamba's state parameters), position / cls tokens.
- Per-step linear warm-up for `warmup_epochs`, then cosine to `min_lr`.
- bf16 autocast on CUDA (precision "auto"), fp32 on CPU.
- Validation every `eval_every` epochs and at the last step, by sliding-window inference over whole
  val scenes; the best validation score (change-class F1 / mF1) is kept in best.pt. The test split is
  evaluated once, with the best-validation weights, after training.
- last.pt (model, optimizer, step, epoch, best score, config) is written atomically at each epoch's
  end; a rerun with the same config resumes from it. Each epoch reseeds data order and augmentation
  from (seed, epoch), so a resumed run sees the same batches as an uninterrupted one.
"""
from __future__ import annotations

import math
import re
import time
from pathlib import Path

import torch
import torch.nn as nn
from torch.utils.data import DataLoader

from roma import torchfile
from roma.config import DenseConfig, to_plain
from roma.eval.dense.data import CropDataset, Scene, to_tensors
from roma.eval.dense.metrics import ConfusionMatrix, change_metrics, seg_metrics
from roma.eval.dense.sliding import sliding_window
from roma.progress import progress
from roma.train.checkpoint import atomic_torch_save
from roma.train.optim import lr_at, no_weight_decay

SELECT = {"cd": "f1", "seg": "mf1"}  # the validation score that picks the checkpoint


# ----------------------------------------------------------------------------- optimizer
def layer_id(name: str, depth: int) -> int:
    """0 for the embeddings, i + 1 for encoder block i, depth + 1 for everything after."""
    if not name.startswith("encoder."):
        return depth + 1
    m = re.search(r"\.layers\.(\d+)\.", name)
    if m:
        return int(m.group(1)) + 1
    if re.search(r"(patch_embed|pos_embed|cls_token)", name):
        return 0
    return depth + 1


def encoder_depth(model: nn.Module) -> int:
    ids = [int(m.group(1)) for n, _ in model.named_parameters() if n.startswith("encoder.")
           for m in [re.search(r"\.layers\.(\d+)\.", n)] if m]
    return max(ids) + 1 if ids else 0


def param_groups(model: nn.Module, lr: float, weight_decay: float, layer_decay: float) -> list[dict]:
    depth = encoder_depth(model)
    groups: dict[tuple[int, bool], dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        lid = layer_id(name, depth)
        no_wd = no_weight_decay(name, p)  # the pretraining rule: biases, norms, A_log, D, tokens
        g = groups.setdefault((lid, no_wd), {"params": [], "names": [], "layer_id": lid,
                                             "lr_scale": layer_decay ** (depth + 1 - lid),
                                             "weight_decay": 0.0 if no_wd else weight_decay})
        g["params"].append(p)
        g["names"].append(name)
    for g in groups.values():
        g["lr"] = lr * g["lr_scale"]
    return [groups[k] for k in sorted(groups)]


def _autocast(device: torch.device, precision: str):
    use = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=use)


@torch.no_grad()
def evaluate(model: nn.Module, scenes: list[Scene], kind: str, window: int, stride: int,
             device: torch.device, precision: str = "auto", window_batch: int = 8) -> dict[str, float]:
    """Sliding-window prediction over whole scenes -> metrics (percent) over all their pixels."""
    was_training = model.training
    model.eval()
    cm = ConfusionMatrix(model.num_classes)
    for scene in scenes:
        *imgs, label = to_tensors(scene.load())
        imgs = [im[None].to(device) for im in imgs]
        with _autocast(device, precision):
            logits = sliding_window(model, tuple(imgs), window, stride, model.num_classes, window_batch)
        cm.update(logits.argmax(1)[0].cpu(), label)
    model.train(was_training)
    return change_metrics(cm.matrix) if kind == "cd" else seg_metrics(cm.matrix)


# ----------------------------------------------------------------------------- checkpoints
def _load(path: Path) -> dict:
    return torchfile.load(path, f"delete it to restart this evaluation from scratch, or rerun it with "
                                f"`launch.py eval ... --force`")


# ----------------------------------------------------------------------------- training
def fit_and_test(model: nn.Module, splits: dict[str, list[Scene]], cfg: DenseConfig, out_dir: Path,
                 device: torch.device | str, kind: str, identity: dict | None = None) -> dict:
    """Train on splits["train"], select on splits["val"], test once -> report dict (metrics in percent).

    identity: what else must match for last.pt to be resumed (e.g. the encoder checkpoint's hash)."""
    if kind not in SELECT:
        raise ValueError(f"kind must be one of {list(SELECT)}, got {kind!r}")
    for s in ("train", "val", "test"):
        if not splits.get(s):
            raise ValueError(f"the {cfg.task} split {s!r} is empty; model selection needs train, val and test")
    device, out_dir = torch.device(device), Path(out_dir)
    window, stride = cfg.crop_size, cfg.slide_stride or max(1, cfg.crop_size // 2)
    model.to(device).train()

    train_ds = CropDataset(splits["train"], cfg.crop_size)
    steps_per_epoch = len(train_ds) // cfg.batch_size
    if steps_per_epoch < 1:
        raise ValueError(f"{len(train_ds)} training crops are fewer than one batch of {cfg.batch_size}")
    total = cfg.max_steps or cfg.epochs * steps_per_epoch
    warmup = round(cfg.warmup_epochs * steps_per_epoch)
    groups = param_groups(model, cfg.lr, cfg.weight_decay, cfg.layer_decay)
    opt = torch.optim.AdamW([{k: v for k, v in g.items() if k != "names"} for g in groups], lr=cfg.lr,
                            betas=(0.9, 0.999))
    config = {"dense": to_plain(cfg), **(identity or {})}
    state = {"step": 0, "epoch": 0, "best": -1.0, "best_epoch": -1, "history": []}
    last, best = out_dir / "last.pt", out_dir / "best.pt"
    if last.is_file():
        ckpt = _load(last)
        if ckpt.get("config") == config:
            model.load_state_dict(ckpt["model"])
            opt.load_state_dict(ckpt["optimizer"])
            state = ckpt["state"]
            print(f"[dense] resumed {cfg.task} at step {state['step']} from {last}", flush=True)
        else:
            print(f"[dense] {last} was written by another config or encoder: starting over", flush=True)

    t0 = time.time()
    bar = progress(total, f"dense {cfg.task}", unit="step", initial=state["step"])
    while state["step"] < total:
        epoch = state["epoch"]
        torch.manual_seed(cfg.seed * 100_003 + epoch)  # crops / flips of this epoch (num_workers=0)
        g = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
        loader = DataLoader(train_ds, batch_size=cfg.batch_size, shuffle=True, drop_last=True, generator=g,
                            num_workers=cfg.num_workers, pin_memory=device.type == "cuda")
        loss_sum, n = 0.0, 0
        for batch in loader:
            if state["step"] >= total:
                break
            for pg in opt.param_groups:
                pg["lr"] = cfg.lr * pg["lr_scale"] * lr_at(state["step"], 1.0, warmup, total, cfg.min_lr / cfg.lr)
            *imgs, target = (t.to(device, non_blocking=True) for t in batch)
            with _autocast(device, cfg.precision):
                loss = model.loss(*imgs, target)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"{cfg.task}: loss is {loss.item()} at step {state['step']}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum, n = loss_sum + loss.item(), n + 1
            state["step"] += 1
            bar.update()
        state["epoch"] = epoch + 1
        done = state["step"] >= total
        if done or state["epoch"] % cfg.eval_every == 0:
            val = evaluate(model, splits["val"], kind, window, stride, device, cfg.precision, cfg.batch_size)
            score = val[SELECT[kind]]
            score = -1.0 if math.isnan(score) else score
            state["history"].append({"epoch": state["epoch"], "step": state["step"], "train_loss": loss_sum / max(n, 1),
                                     **{f"val_{k}": v for k, v in val.items()}})
            print(f"[dense] {cfg.task} epoch {state['epoch']} step {state['step']}/{total} "
                  f"loss {loss_sum / max(n, 1):.4f} val {SELECT[kind]} {score:.2f} ({time.time() - t0:.0f} s)",
                  flush=True)
            if score > state["best"] or state["best_epoch"] < 0:  # the first evaluation always counts
                state["best"], state["best_epoch"] = score, state["epoch"]
                atomic_torch_save({"model": model.state_dict(), "epoch": state["epoch"], "val": val}, best)
        atomic_torch_save({"model": model.state_dict(), "optimizer": opt.state_dict(), "state": state,
                     "config": config}, last)

    bar.close()
    model.load_state_dict(_load(best)["model"])
    test = evaluate(model, splits["test"], kind, window, stride, device, cfg.precision, cfg.batch_size)
    return {"test": test, "best_val": state["best"], "best_epoch": state["best_epoch"], "steps": state["step"],
            "steps_per_epoch": steps_per_epoch, "history": state["history"], "train_seconds": round(time.time() - t0, 1),
            "n_scenes": {s: len(v) for s, v in splits.items()}}
