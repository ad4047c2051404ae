"""The pretraining loop: resumable to the bit on CPU, DDP-ready; a plain function of its inputs.

    result = pretrain(cfg, run_dir, hooks)   # -> {"step", "epoch", "final_loss", "encoder", "trained", ...}

It reads `cfg`, writes only `run_dir` (last.pt, encoder.pt, bad-image lists) and reports through
`hooks` (roma.train.hooks: start, log steps, checkpoints, preemption). Tracking, status files and
the SLURM job are the caller's (roma.run, roma.launch).

One optimizer step = `train.global_batch` images over all ranks: each rank takes its share in
`accum_steps` micro-batches of `device_batch` images (roma.train.batching derives both from the
world size and `train.max_device_batch`). The sampler position (global: images of the current
epoch consumed by all ranks), the RNG states, model, optimizer and scheduler go into last.pt every
`ckpt_every_steps` steps and at the end; a restart reloads them and continues as if nothing
happened (augmentation randomness is a function of seed, epoch and index in the data layer, so
skipped-to samples get the same crops), also on another number of ranks: the same images make
each step (bitwise equal on the same layout, equal up to float summation order on another).
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
from torch.utils.data import DataLoader

from roma.allocator import keep_freed_memory
from roma.config import CHOICES, RunConfig, identity
from roma.models.scan import resolve_backend
from roma.progress import Progress
from roma.train import checkpoint as ckpt_io
from roma.train.distributed import (
    all_reduce_mean,
    barrier,
    cleanup,
    init_distributed,
    worker_ignore_job_signals,
    wrap_ddp,
)
from roma.train.hooks import TrainHooks
from roma.train.batching import BatchLayout, layout, model_inputs, schedule
from roma.train.heldout import heldout_losses
from roma.train.optim import WarmupCosine, build_optimizer
from roma.train.sampler import ResumableSampler

class NonFiniteLossError(FloatingPointError):
    pass


# ----------------------------------------------------------------------------- one step
def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """None = fp32. auto: bf16 on CUDA, fp32 on CPU."""
    if precision not in CHOICES["train.precision"]:
        raise ValueError(f"train.precision must be one of {'|'.join(CHOICES['train.precision'])}, got {precision!r}")
    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}[precision]


def forward_backward(model: torch.nn.Module, micro_batches: list[dict[str, Any]], device: torch.device,
                     amp_dtype: torch.dtype | None, scaler: torch.amp.GradScaler, step: int) -> dict[str, torch.Tensor]:
    """Accumulate gradients of the mean loss over `micro_batches` (equal sizes: equals one big batch).

    DDP all-reduces only on the last micro-batch (no_sync on the others). Returns the detached mean
    of each loss term; raises NonFiniteLossError naming `step` (1-based) on a NaN/inf loss.
    """
    n = len(micro_batches)
    totals: dict[str, torch.Tensor] = {}
    for i, batch in enumerate(micro_batches):
        sync = i == n - 1 or not hasattr(model, "no_sync")
        ctx = contextlib.nullcontext() if sync else model.no_sync()
        with ctx:
            with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                out = model(**model_inputs(batch, device))
            loss = out["loss"]
            if not torch.isfinite(loss.detach()):
                raise NonFiniteLossError(f"non-finite loss ({loss.item()}) at step {step} "
                                         f"(micro-batch {i + 1}/{n}); stopping")
            scaler.scale(loss / n).backward()
        for k, v in out.items():
            totals[k] = totals.get(k, 0) + v.detach().float() / n
    return totals


# ----------------------------------------------------------------------------- model and data
def build_model(cfg: RunConfig) -> torch.nn.Module:
    """The pretraining model every model.* key describes (registry size + geometry + decoder), with ARES and MSP."""
    from roma.models import create_model

    m = cfg.model
    return create_model(m.name, img_size=m.img_size, patch_size=m.patch_size, cluster_size=m.cluster_size,
                        decoder_dim=m.decoder_dim, decoder_depth=m.decoder_depth, decoder_heads=m.decoder_heads,
                        ares=cfg.ares, msp=cfg.msp)


def build_heldout(cfg: RunConfig):
    """The held-out dataset of val_loss (roma.data.heldout: built without ARES for every run), or None
    when data.heldout_size is 0."""
    from roma.data.heldout import build_heldout_dataset

    return build_heldout_dataset(cfg.data, cfg.model)[0]


def pretrain_flops(model: torch.nn.Module) -> float:
    """Forward FLOPs of one image (roma.models.registry), counted without touching the RNG streams."""
    from roma.models.registry import pretrain_flops as count

    with torch.random.fork_rng(devices=[]):
        return count(model)


def build_data(cfg: RunConfig, run_dir: Path, seed: int):
    """(dataset, collate, info) from roma.data (imported here: the loop needs no data at import)."""
    from roma.data import build_pretrain_dataset, collate

    dataset, info = build_pretrain_dataset(cfg.data, cfg.model, cfg.ares, run_dir, seed)
    return dataset, collate, info


@dataclass
class LoopState:
    """What the preempt hook and the checkpoint need about the last completed step."""

    step: int = 0
    epoch: int = 0
    position: int = 0  # images of `epoch` consumed by all ranks (a multiple of the global batch)
    last_loss: float | None = None
    last_val: dict[str, float] = field(default_factory=dict)  # the held-out losses of the last evaluation
    seconds: float = 0.0  # wall-clock seconds of the steps of earlier attempts (last.pt), for device_hours
    rng: dict[str, Any] = field(default_factory=dict)
    updating: bool = False  # True while optimizer.step changes the weights (no consistent state)


def progress_postfix(epoch: int, metrics: dict[str, float]) -> str:
    """The status a log step adds to the progress line (a plain line per train.log_every_steps in logs)."""
    return (f"epoch {epoch} loss {metrics['loss']:.4f} lr {metrics['lr']:.3e} "
            f"images/s {metrics['images_per_s']:.1f} bad {metrics['bad_images']:.0f}")


# ----------------------------------------------------------------------------- the loop
def pretrain(cfg: RunConfig, run_dir: Path, hooks: TrainHooks | None = None, device: str | None = None,
             data: Callable[[RunConfig, Path, int], tuple] | None = None) -> dict[str, Any]:
    """Pretrain (or resume) the run in `run_dir` to its last step; export encoder.pt.

    hooks: told about the start, log steps and checkpoints, and asked to arrange preemption (rank 0).
    `data` replaces build_data (benchmarks, tests); it returns (dataset, collate, info).
    """
    from roma.models import count_params

    tc = cfg.train
    hooks = hooks or TrainHooks()
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    dist = init_distributed(device)
    dev = dist.device
    try:
        lay = layout(tc.global_batch, dist.world_size, tc.max_device_batch)
    except ValueError:
        cleanup(dist)
        raise
    amp_dtype = autocast_dtype(tc.precision, dev)
    if dev.type == "cpu":
        keep_freed_memory()  # the step's multi-MB activations stay in the heap (roma/allocator.py)

    # same initial weights on every rank and on every restart (then overwritten by last.pt)
    ckpt_io.seed_everything(tc.seed)
    dataset, collate, info = (data or build_data)(cfg, run_dir, tc.seed)
    heldout = build_heldout(cfg)  # None without data.heldout_size
    model = build_model(cfg)
    flops_per_image = pretrain_flops(model) if dist.is_main else 0.0
    model = model.to(dev)
    optimizer = build_optimizer(model, tc)
    sch = schedule(tc, len(dataset))
    sampler = ResumableSampler(len(dataset), tc.global_batch, seed=tc.seed, rank=dist.rank,
                               world_size=dist.world_size)
    steps_per_epoch, total = sch.steps_per_epoch, sch.total_steps
    scheduler = WarmupCosine(optimizer, sch.warmup_steps, total, tc.min_lr)
    scaler = torch.amp.GradScaler(dev.type, enabled=amp_dtype == torch.float16)

    st = LoopState()
    from roma.data import BadImageTracker

    listing = run_dir / ("bad_images.txt" if dist.is_main else f"bad_images.rank{dist.rank}.txt")
    bad_tracker = BadImageTracker(cfg.data.max_bad_fraction, listing, total=len(dataset))
    last = ckpt_io.load_last(run_dir)
    if last is not None:
        check_resumable(last, cfg, run_dir)
        check_sampler(last, sampler, lay, run_dir, announce=dist.is_main)
        restore(last, st, model, optimizer, scheduler, scaler, bad_tracker)
    started = time.perf_counter()

    def seconds() -> float:  # pretraining wall clock over all attempts, up to the last checkpoint of each
        return st.seconds + time.perf_counter() - started
    if dist.is_main:  # lines a killed attempt appended after its checkpoint are found again: drop them
        bad_tracker.write_listing()
    ddp_model = wrap_ddp(model, dist)

    if dist.is_main:
        hooks.on_start(st.step, {"param_count": count_params(model.encoder),
                                 "data_size": info.get("data_size", len(dataset)),
                                 "data_checksum": info.get("checksum", ""),
                                 "global_batch": lay.global_batch, "world_size": lay.world_size,
                                 "device_batch": lay.device_batch, "accum_steps": lay.accum_steps,
                                 "steps_per_epoch": steps_per_epoch, "total_steps": total,
                                 "images_seen": sch.images_seen,
                                 # native and fast agree to fp32 round-off, not bit for bit: say which ran
                                 "scan_backend": resolve_backend(dev, length=math.prod(model.encoder.grid))})

    def save(keep_epoch: int | None = None) -> None:
        if not dist.is_main:
            return
        state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                 "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                 "sampler": sampler.state_dict(st.position), "rng": st.rng or ckpt_io.rng_state(),
                 "step": st.step, "epoch": st.epoch, "bad_tracker": bad_tracker.state_dict(),
                 "last_loss": st.last_loss, "last_val": st.last_val, "seconds": seconds(),
                 "total_steps": total, "config": cfg.to_dict()}
        ckpt_io.save_last(run_dir, state, keep_epoch)

    def checkpoint(keep_epoch: int | None = None) -> None:
        # reports first: MLflow must never lag behind last.pt, or a kill in between would lose
        # the steps up to the checkpoint (a resumed run does not log them again)
        if dist.is_main:
            hooks.on_checkpoint(st.step)
        save(keep_epoch)

    def on_preempt() -> None:  # runs in a signal handler: save only a consistent state
        if not st.updating:
            save()

    unhook = hooks.on_preempt(on_preempt) if dist.is_main else (lambda: None)
    progress = Progress(total, "pretrain", unit="step", initial=st.step, every_n=tc.log_every_steps,
                        enabled=dist.is_main)
    batches = None
    try:
        images_since, t_log = 0, time.perf_counter()
        while st.step < total:
            sampler.set_epoch(st.epoch, st.position)
            if hasattr(dataset, "set_epoch"):
                dataset.set_epoch(st.epoch)
            loader = DataLoader(dataset, batch_size=lay.device_batch, sampler=sampler, collate_fn=collate,
                                num_workers=cfg.data.num_workers, pin_memory=dev.type == "cuda",
                                drop_last=True, persistent_workers=False,
                                # SLURM signals every process of the job: workers must leave
                                # SIGTERM/SIGUSR2 to the main process, which checkpoints
                                worker_init_fn=worker_ignore_job_signals,
                                # worker seeds from (seed, epoch), not from the global RNG stream
                                generator=torch.Generator().manual_seed(tc.seed * 100003 + st.epoch))
            _shutdown_workers(batches)
            batches = iter(loader)
            while st.step < total and sampler.epoch_len - st.position >= lay.global_batch:
                micro = _next_micro_batches(batches, lay.accum_steps, bad_tracker)
                model.train()
                losses = forward_backward(ddp_model, micro, dev, amp_dtype, scaler, st.step + 1)
                scaler.unscale_(optimizer)
                grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), tc.clip_grad)
                if not torch.isfinite(grad_norm):
                    raise NonFiniteLossError(f"non-finite gradient norm at step {st.step + 1}; stopping")
                lr = optimizer.param_groups[0]["lr"]
                st.updating = True
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
                scheduler.step()
                st.step += 1
                st.position += lay.global_batch
                st.rng = ckpt_io.rng_state()
                st.updating = False
                images_since += lay.global_batch

                val_now = heldout is not None and (st.step == total or (
                    tc.val_every_steps > 0 and st.step % tc.val_every_steps == 0))
                log_now = st.step % tc.log_every_steps == 0 or st.step == total or val_now
                metrics = {}
                if log_now:
                    metrics = {k: all_reduce_mean(v, dist).item() for k, v in losses.items()}
                    st.last_loss = metrics["loss"]
                    now = time.perf_counter()
                    metrics.update(lr=lr, images_per_s=images_since / max(now - t_log, 1e-9),
                                   bad_images=bad_tracker.count, grad_norm=float(grad_norm))
                    if val_now:  # in the same report as the step: a resumed run logs each step once
                        st.last_val = heldout_losses(model, heldout, collate, lay.device_batch, dev, amp_dtype, dist)
                        metrics.update(st.last_val)
                    images_since, t_log = 0, time.perf_counter()
                    if dist.is_main:
                        hooks.on_log(st.step, metrics)
                progress.update(1, progress_postfix(st.epoch, metrics) if log_now else None)
                if st.step % tc.ckpt_every_steps == 0 and st.step < total:
                    checkpoint()
            if sampler.epoch_len - st.position < lay.global_batch:  # epoch done
                st.epoch, st.position = st.epoch + 1, 0
                st.rng = ckpt_io.rng_state()
                if st.epoch in tc.keep_epochs:
                    checkpoint(keep_epoch=st.epoch)
        encoder_path = run_dir / ckpt_io.ENCODER
        # a relaunch of a finished run changes nothing (no rewritten files, no re-logged metrics)
        already_done = last is not None and last["step"] >= total and encoder_path.exists()
        if not already_done:
            bad_tracker.finish()
            checkpoint()
            if dist.is_main:
                ckpt_io.export_encoder(run_dir, model.encoder, cfg.model.name, cfg.to_dict()["model"])
        barrier(dist)  # the other ranks leave only once rank 0 has written last.pt and encoder.pt
    finally:
        # Workers ignore SIGTERM (see worker_init_fn), so they must be stopped the polite way here:
        # left to interpreter exit, multiprocessing would SIGTERM them and wait forever.
        _shutdown_workers(batches)
        progress.close()
        unhook()
        cleanup(dist)
    # trained: this call ran steps or wrote encoder.pt (False: a relaunch of a finished run)
    # final_loss: the last logged training batch's loss; val: the held-out losses at the last step
    return {"step": st.step, "epoch": st.epoch, "final_loss": st.last_loss, "val": st.last_val,
            "encoder": str(encoder_path), "bad_images": bad_tracker.count, "total_steps": total, "rank": dist.rank,
            "trained": not already_done, "images_trained": st.step * lay.global_batch,
            "flops_per_image": flops_per_image, "device_hours": seconds() * lay.world_size / 3600}


# ----------------------------------------------------------------------------- helpers
def _next_micro_batches(batches: Iterable, accum: int, bad_tracker) -> list[dict[str, Any]]:
    """The next `accum` collated batches, unreadable images accounted (and dropped by collate)."""
    micro = []
    for _ in range(accum):
        batch = next(batches)
        bad_tracker.update(batch)
        if batch.get("image") is not None:
            micro.append(batch)
    if not micro:
        raise RuntimeError(f"every image of {accum} batch(es) was unreadable; see {bad_tracker.listing}")
    return micro


def restore(last: dict[str, Any], st: LoopState, model, optimizer, scheduler, scaler, bad_tracker) -> None:
    """Load last.pt into the freshly built objects and the loop state."""
    model.load_state_dict(last["model"])
    optimizer.load_state_dict(last["optimizer"])
    scheduler.load_state_dict(last["scheduler"])
    if last.get("scaler"):
        scaler.load_state_dict(last["scaler"])
    if last.get("bad_tracker"):
        bad_tracker.load_state_dict(last["bad_tracker"])
    ckpt_io.set_rng_state(last["rng"])
    st.step, st.epoch, st.position = last["step"], last["epoch"], last["sampler"]["position"]
    st.last_loss, st.rng = last.get("last_loss"), last["rng"]
    st.last_val, st.seconds = last.get("last_val") or {}, float(last.get("seconds", 0.0))


def check_resumable(last: dict[str, Any], cfg: RunConfig, run_dir: Path) -> None:
    """last.pt must come from the same computation (same run id inputs) as cfg."""
    saved, now = identity(last["config"]), cfg.identity()
    if saved != now:
        diff = sorted(k for k in now if saved.get(k) != now[k])
        raise ValueError(f"{run_dir / ckpt_io.LAST} was written by a different config (sections {diff} differ); "
                         "remove it or use another output folder")


def check_sampler(last: dict[str, Any], sampler: ResumableSampler, lay: BatchLayout, run_dir: Path,
                  announce: bool = False) -> None:
    """last.pt's sampler position must be a global one of this dataset and global batch; the world
    size may differ (the position is global, so the same images make each remaining step)."""
    saved = last["sampler"]
    where = run_dir / ckpt_io.LAST
    if saved.get("global_batch") != lay.global_batch:
        raise ValueError(f"{where}: its sampler position is not in global images of train.global_batch "
                         f"{lay.global_batch} (written with {saved.get('global_batch', 'a per-rank position')}); "
                         "it cannot be resumed exactly: remove it or use another output folder")
    if saved.get("n") != sampler.n or saved["position"] % lay.global_batch or saved["position"] > sampler.epoch_len:
        raise ValueError(f"{where}: sampler position {saved['position']} of {saved.get('n')} images does not fit "
                         f"this dataset of {sampler.n} images at global batch {lay.global_batch}")
    if announce and saved.get("world_size") != lay.world_size:
        print(f"resuming at step {last['step']} on {lay.world_size} rank(s) (last.pt: {saved.get('world_size')}): "
              f"global batch {lay.global_batch} = {lay.world_size} x {lay.device_batch} x {lay.accum_steps} "
              f"micro-steps, sampler at global position {saved['position']}", flush=True)


def _shutdown_workers(batches) -> None:
    """Stop a DataLoader iterator's workers now (sentinel + join), not at garbage collection."""
    stop = getattr(batches, "_shutdown_workers", None)
    if stop is not None:
        stop()
