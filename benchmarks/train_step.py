"""Images/s of the full pretraining step (forward + backward + clip + AdamW + schedule), with the
data pipeline excluded (tensors already on the device) and included (decode + RandomResizedCrop
+ flip + ARES + normalise in DataLoader workers, then host-to-device copy).

    python benchmarks/train_step.py                                  # roma_micro_tiny, CPU
    python benchmarks/train_step.py --model roma_base --img-size 192 --batch 64 --device cuda
    python benchmarks/train_step.py --data ../shared/data/AID        # real images (else synthetic PNGs)

The step is the training loop's own (roma.train.pretrain.forward_backward, build_optimizer,
WarmupCosine), with ARES + MSP as configured by default in roma.config. Printed: images/s over
--steps steps after --warmup steps, for each mode; --json writes the numbers.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]


def synthetic_pngs(folder: Path, n: int, size: int) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / f"{i:05d}.png")
    return folder


def build(args, device):
    from roma.config import AresConfig, MspConfig, TrainConfig
    from roma.models import count_params, create_model
    from roma.models.registry import get_model_size
    from roma.train.optim import WarmupCosine, build_optimizer

    size = get_model_size(args.model)
    img = args.img_size or size.img_size
    ares, msp = AresConfig(region_sizes=tuple(args.regions)), MspConfig(scales=tuple(args.msp_scales))
    torch.manual_seed(0)
    model = create_model(args.model, img_size=img, ares=ares, msp=msp).to(device)
    tc = TrainConfig(global_batch=args.batch)
    opt = build_optimizer(model, tc)
    if device.type == "cuda":  # the fused kernel: what a GPU run would use (the CPU loop keeps foreach=False)
        opt = torch.optim.AdamW(opt.param_groups, lr=opt.defaults["lr"], betas=tc.betas, fused=True)
    sched = WarmupCosine(opt, 10, 10_000)
    print(f"{args.model} @ {img}px: encoder {count_params(model.encoder) / 1e6:.2f}M, "
          f"total {count_params(model) / 1e6:.2f}M params; batch {args.batch} on {device}", flush=True)
    return model, opt, sched, img, ares, msp


def run_steps(model, opt, sched, batches, device, steps: int, warmup: int) -> float:
    from roma.train.pretrain import autocast_dtype, forward_backward

    amp = autocast_dtype("auto", device)
    scaler = torch.amp.GradScaler(device.type, enabled=False)

    def step(i, batch):
        forward_backward(model, [batch], device, amp, scaler, i)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 3.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        sched.step()

    it = iter(batches)
    for i in range(warmup):
        step(i, next(it))
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0, n = time.perf_counter(), 0
    for i in range(steps):
        batch = next(it)
        n += len(batch["image"])
        step(warmup + i, batch)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return n / (time.perf_counter() - t0)


def in_memory_batches(batch: int, img: int, device):
    """The same normalised batch with an ARES region and angle, forever (data excluded)."""
    g = torch.Generator().manual_seed(0)
    b = {"image": torch.randn(batch, 3, img, img, generator=g).to(device),
         "region": torch.tensor([[0, 0, 2]] * batch, device=device),
         "angle": torch.full((batch,), 20.0, device=device)}
    b["target"] = b["image"]
    while True:
        yield b


def loader_batches(args, img, ares, device, tmp: Path):
    """Endless batches from roma.data over a folder (data included: decode, augment, ARES, copy)."""
    from torch.utils.data import DataLoader

    from roma.config import DataConfig, ModelConfig
    from roma.data import build_pretrain_dataset, collate
    from roma.models.registry import get_model_size

    n_synth = args.batch * (args.steps + args.warmup + 1)  # one epoch covers the timed steps
    root = Path(args.data) if args.data else synthetic_pngs(tmp, n_synth, max(img + img // 4, 64))
    size = get_model_size(args.model)
    mcfg = ModelConfig(name=args.model, img_size=img, patch_size=size.patch_size, cluster_size=size.cluster_size)
    ds, info = build_pretrain_dataset(DataConfig(root=str(root), num_workers=args.workers), mcfg, ares, tmp, 0)
    print(f"data: {info['data_size']} images from {root}, {args.workers} workers", flush=True)
    epoch = 0
    while True:
        ds.set_epoch(epoch)
        loader = DataLoader(ds, batch_size=args.batch, shuffle=True, drop_last=True, collate_fn=collate,
                            num_workers=args.workers, pin_memory=device.type == "cuda",
                            persistent_workers=False)
        yield from loader
        epoch += 1


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="roma_micro_tiny")
    p.add_argument("--img-size", type=int, default=0, help="0: the model's own")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--device", default="auto")
    p.add_argument("--data", default="", help="an image folder/manifest (default: synthetic PNGs)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--regions", type=int, nargs="+", default=[6, 4, 2], help="ARES region sizes (patches)")
    p.add_argument("--msp-scales", type=int, nargs="+", default=[6])
    p.add_argument("--modes", nargs="+", default=["excluded", "included"], choices=["excluded", "included"])
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    model, opt, sched, img, ares, _ = build(args, device)
    result = {"model": args.model, "img_size": img, "batch": args.batch, "device": str(device),
              "device_name": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
              "threads": torch.get_num_threads(), "workers": args.workers}
    with tempfile.TemporaryDirectory() as tmp:
        for mode in args.modes:
            batches = in_memory_batches(args.batch, img, device) if mode == "excluded" else \
                loader_batches(args, img, ares, device, Path(tmp))
            ips = run_steps(model, opt, sched, batches, device, args.steps, args.warmup)
            result[f"images_per_s_data_{mode}"] = round(ips, 2)
            print(f"data {mode:<9} {ips:10.1f} images/s", flush=True)
    if device.type == "cuda":
        result["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()
