"""Images/s of the full pretraining step (forward + backward + clip + AdamW + schedule), with the
data pipeline excluded (tensors already on the device) and included (decode + RandomResizedCrop
+ flip + ARES + normalise in DataLoader workers, then host-to-device copy).

    python benchmarks/train_step.py                                  # roma_micro_tiny, CPU
    python benchmarks/train_step.py --model roma_base --img-size 192 --batch 64 --device cuda
    python benchmarks/train_step.py --data ../shared/data/AID        # real images (else synthetic PNGs)
    python benchmarks/train_step.py --compare ../base --rounds 4     # this tree against another checkout
    python benchmarks/train_step.py --precision bf16                 # bf16 autocast (fast on CPUs with AMX)
    python benchmarks/train_step.py --compare ../base --precision bf16 --other-precision fp32

The step is the training loop's own (roma.train.pretrain.forward_backward, build_optimizer,
WarmupCosine), with ARES + MSP as configured by default in roma.config. Printed: images/s over
--steps steps after --warmup steps, for each mode; --json writes the numbers.

--compare TREE times this checkout against another one (e.g. an older commit) in one run: each
round runs one subprocess per tree, in alternating order, with PYTHONPATH set to that tree (so
`roma` is imported from it; the process checks that it was), the same seeds and the same batch.
Printed: images/s per tree (median over rounds), the ratio of the medians and of each round, and
the largest relative difference between the two trees' per-step losses (0 = bitwise identical).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
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
    ares = AresConfig(region_sizes=tuple(args.regions))
    msp = MspConfig(scales=tuple(args.msp_scales), **({"hidden_dim": args.msp_hidden} if args.msp_hidden else {}))
    torch.manual_seed(0)
    model = create_model(args.model, img_size=img, ares=ares, msp=msp, cluster_size=args.cluster_size or None,
                         decoder_dim=args.decoder_dim or None).to(device)
    old = "global_batch" not in {f.name for f in dataclasses.fields(TrainConfig)}  # --compare with a tree before it
    tc = TrainConfig(**{("batch_size" if old else "global_batch"): args.batch})
    opt = build_optimizer(model, tc)
    if device.type == "cpu":  # as the training loop does on a CPU, in trees that have it
        try:
            from roma.allocator import keep_freed_memory
        except ImportError:
            pass
        else:
            keep_freed_memory()
    if device.type == "cuda":  # the fused kernel: what a GPU run would use (the CPU loop keeps foreach=False)
        opt = torch.optim.AdamW(opt.param_groups, lr=opt.defaults["lr"], betas=tc.betas, fused=True)
    sched = WarmupCosine(opt, 10, 10_000)
    print(f"{args.model} @ {img}px: encoder {count_params(model.encoder) / 1e6:.2f}M, "
          f"total {count_params(model) / 1e6:.2f}M params; batch {args.batch} on {device}", flush=True)
    return model, opt, sched, img, ares, msp


def run_steps(model, opt, sched, batches, device, steps: int, warmup: int, losses: list | None = None,
              precision: str = "auto") -> tuple[float, float]:
    """(images per wall-clock second, images per CPU second of this process) over `steps` steps after
    `warmup` steps; appends every step's loss to `losses`. CPU time counts all of the process's
    threads but not DataLoader workers; on a shared machine it is the steadier of the two."""
    from roma.train.pretrain import autocast_dtype, forward_backward

    amp = autocast_dtype(precision, device)
    scaler = torch.amp.GradScaler(device.type, enabled=False)

    def step(i, batch):
        out = forward_backward(model, [batch], device, amp, scaler, i)
        if losses is not None:
            losses.append(float(out["loss"]))
        torch.nn.utils.clip_grad_norm_(model.parameters(), 3.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        sched.step()

    it = iter(batches)
    for i in range(warmup):
        step(i, next(it))
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0, c0, n = time.perf_counter(), time.process_time(), 0
    for i in range(steps):
        batch = next(it)
        n += len(batch["image"])
        step(warmup + i, batch)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return n / (time.perf_counter() - t0), n / (time.process_time() - c0)


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
    mcfg = ModelConfig(name=args.model, img_size=img, patch_size=size.patch_size, cluster_size=args.cluster_size or size.cluster_size)
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


def _commit(tree: Path) -> str:
    res = subprocess.run(["git", "-C", str(tree), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", str(tree), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    return (res.stdout.strip() or "?") + ("+changes" if dirty else "")


def compare(args, passthrough: list[str]) -> dict:
    """Alternate subprocesses of this tree and args.compare; -> images/s, ratios, loss agreement."""
    trees = {"this": REPO, "other": Path(args.compare).resolve()}
    if not (trees["other"] / "roma" / "__init__.py").is_file():
        raise SystemExit(f"--compare {args.compare}: no roma package there")
    runs: dict[str, list[dict]] = {k: [] for k in trees}
    for r in range(args.rounds):
        order = list(trees) if r % 2 == 0 else list(trees)[::-1]  # alternate who goes first
        for name in order:
            env = {**os.environ, "PYTHONPATH": str(trees[name])}
            precision = args.other_precision if name == "other" and args.other_precision else args.precision
            cmd = [sys.executable, __file__, "--worker", str(trees[name]), *passthrough, "--precision", precision]
            res = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if res.returncode:
                raise SystemExit(f"{name} tree ({trees[name]}) failed:\n{res.stderr[-3000:]}")
            row = json.loads(res.stdout.strip().splitlines()[-1])
            runs[name].append(row)
            print(f"round {r + 1}/{args.rounds} {name:<5} ({row['commit']}): " + "  ".join(
                f"data {m} {row[f'images_per_s_data_{m}']:.1f}" for m in args.modes) + " images/s", flush=True)
    out = {"this": str(trees["this"]), "this_commit": runs["this"][0]["commit"],
           "other": str(trees["other"]), "other_commit": runs["other"][0]["commit"],
           "model": args.model, "batch": args.batch, "rounds": args.rounds, "threads": runs["this"][0]["threads"],
           "precision": args.precision, "other_precision": args.other_precision or args.precision}
    for m in args.modes:
        key = f"images_per_s_data_{m}"
        a = [row[key] for row in runs["this"]]
        b = [row[key] for row in runs["other"]]
        out[f"{m}_this"], out[f"{m}_other"] = statistics.median(a), statistics.median(b)
        out[f"{m}_ratio"] = out[f"{m}_this"] / out[f"{m}_other"]
        out[f"{m}_round_ratios"] = [x / y for x, y in zip(a, b)]
        ca = [row[f"images_per_cpu_s_data_{m}"] for row in runs["this"]]
        cb = [row[f"images_per_cpu_s_data_{m}"] for row in runs["other"]]
        out[f"{m}_cpu_ratio"] = statistics.median(ca) / statistics.median(cb)
        print(f"data {m}: this {out[f'{m}_this']:.1f} vs other {out[f'{m}_other']:.1f} images/s (median of "
              f"{args.rounds}): x{out[f'{m}_ratio']:.2f}; per round " +
              " ".join(f"x{x:.2f}" for x in out[f"{m}_round_ratios"]) +
              f"; per CPU second {statistics.median(ca):.1f} vs {statistics.median(cb):.1f}: x{out[f'{m}_cpu_ratio']:.2f}",
              flush=True)
    # the same seeds and batches: the per-step losses of the two trees (excluded mode: one fixed batch)
    la, lb = runs["this"][0]["losses"], runs["other"][0]["losses"]
    out["losses_this"], out["losses_other"] = la, lb
    out["loss_max_rel_diff"] = max(abs(x - y) / abs(y) for x, y in zip(la, lb))
    same = all(r["losses"] == la for r in runs["this"]) and all(r["losses"] == lb for r in runs["other"])
    print(f"losses over {len(la)} steps ({args.modes[0]}): this {la[0]:.6f} .. {la[-1]:.6f}, "
          f"other {lb[0]:.6f} .. {lb[-1]:.6f}; max relative difference {out['loss_max_rel_diff']:.2e}"
          f"{'' if same else ' (a tree is not reproducible across its own rounds)'}", flush=True)
    return out


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
    p.add_argument("--msp-hidden", type=int, default=0, help="MSP head width (0: roma.config's default)")
    p.add_argument("--decoder-dim", type=int, default=0, help="0: the registry's")
    p.add_argument("--cluster-size", type=int, default=0, help="0: the registry's")
    p.add_argument("--modes", nargs="+", default=["excluded", "included"], choices=["excluded", "included"])
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--precision", default="auto", help="train.precision (auto: bf16 on CUDA, fp32 on CPU)")
    p.add_argument("--compare", default="", help="another checkout to time against, alternating subprocesses")
    p.add_argument("--rounds", type=int, default=3, help="with --compare: subprocess pairs")
    p.add_argument("--other-precision", default="", help="with --compare: the other tree's precision (default: --precision)")
    p.add_argument("--worker", default="", help=argparse.SUPPRESS)  # a --compare subprocess: the tree it must import
    argv = sys.argv[1:] if argv is None else argv
    args = p.parse_args(argv)
    if args.compare:
        drop = {"--compare": 2, "--rounds": 2, "--json": 2, "--precision": 2, "--other-precision": 2}
        passthrough, i = [], 0
        while i < len(argv):
            key = argv[i].split("=")[0]
            step = drop.get(key, 0) if "=" not in argv[i] else (1 if key in drop else 0)
            if step:
                i += step
                continue
            passthrough.append(argv[i])
            i += 1
        result = compare(args, passthrough)
        if args.json:
            args.json.write_text(json.dumps(result, indent=1) + "\n")
        return result
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.worker:
        import roma

        if not Path(roma.__file__).resolve().is_relative_to(Path(args.worker).resolve()):
            raise SystemExit(f"worker for {args.worker} imported roma from {roma.__file__}")
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    model, opt, sched, img, ares, _ = build(args, device)
    result = {"model": args.model, "img_size": img, "batch": args.batch, "device": str(device), "precision": args.precision,
              "device_name": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
              "threads": torch.get_num_threads(), "workers": args.workers}
    losses: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        for mode in args.modes:
            batches = in_memory_batches(args.batch, img, device) if mode == "excluded" else \
                loader_batches(args, img, ares, device, Path(tmp))
            ips, ipc = run_steps(model, opt, sched, batches, device, args.steps, args.warmup,
                                 losses if mode == args.modes[0] else None, args.precision)
            result[f"images_per_s_data_{mode}"] = round(ips, 2)
            result[f"images_per_cpu_s_data_{mode}"] = round(ipc, 2)
            print(f"data {mode:<9} {ips:10.1f} images/s {ipc:10.1f} images per CPU second", flush=True)
    result["losses"] = losses
    if device.type == "cuda":
        result["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    if args.worker:
        result["commit"] = _commit(Path(args.worker))
        print(json.dumps(result))
    return result


if __name__ == "__main__":
    if "--worker" not in sys.argv:  # a --compare worker imports roma from its PYTHONPATH only
        sys.path.insert(0, str(REPO))
    main()
