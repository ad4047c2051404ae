"""GPU check of the dense tasks on synthetic data (no dataset needed): a few minutes on one H100/H200.

    PYTHONPATH=. python -m roma.eval.dense.gpu_check [--model roma_base] [--img-size 256] [--batch-size 8]

1. training-step speed and peak memory of change detection and segmentation with the full-size
   encoder (v3 scan, bf16 autocast, AdamW with layer decay), and one sliding-window pass over a
   1024 x 1024 pair (a full LEVIR-CD tile);
2. run_dense end to end on a synthetic LEVIR-style folder with a micro encoder on CUDA
   (DataLoader workers, bf16, validation, checkpoints, test).
Each section reports its own failure and the script goes on.
"""
from __future__ import annotations

import argparse
import tempfile
import time
import traceback
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from roma.config import DenseConfig, ModelConfig
from roma.eval.dense import build_model, run_dense
from roma.eval.dense.sliding import sliding_window
from roma.eval.dense.train import param_groups
from roma.models.downstream import build_downstream_encoder
from roma.models.registry import get_model_size


def synthetic_levir(root: Path, size: int = 256, n: dict | None = None, seed: int = 0) -> Path:
    """A/, B/, label/ pairs named train_/val_/test_: B is A with a few bright rectangles (the change)."""
    rng = np.random.default_rng(seed)
    for d in ("A", "B", "label"):
        (root / d).mkdir(parents=True, exist_ok=True)
    for split, count in (n or {"train": 16, "val": 2, "test": 2}).items():
        for i in range(count):
            a = rng.integers(40, 200, (size, size, 3), np.uint8)
            b, lab = a.copy(), np.zeros((size, size), np.uint8)
            for _ in range(3):
                t, l, h, w = rng.integers(0, size - 40, 2).tolist() + rng.integers(10, 40, 2).tolist()
                b[t:t + h, l:l + w] = 250
                lab[t:t + h, l:l + w] = 255
            name = f"{split}_{i}.png"
            Image.fromarray(a).save(root / "A" / name)
            Image.fromarray(b).save(root / "B" / name)
            Image.fromarray(lab).save(root / "label" / name)
    return root


def step_speed(model_name: str, task: str, img: int, batch: int, steps: int = 10) -> None:
    dev = torch.device("cuda")
    cfg = DenseConfig(task=task, img_size=img, crop_size=img)
    enc = build_downstream_encoder(None, model_name, img, scan="v3")
    model = build_model(enc, cfg).to(dev).train()
    opt = torch.optim.AdamW([{k: v for k, v in g.items() if k != "names"} for g in
                             param_groups(model, 6e-5, 0.05, 0.75)])
    x = [torch.randn(batch, 3, img, img, device=dev) for _ in range(2 if task == "levir" else 1)]
    y = torch.randint(0, 2, (batch, img, img), device=dev)
    torch.cuda.reset_peak_memory_stats()
    for i in range(steps + 3):
        if i == 3:
            torch.cuda.synchronize()
            t0 = time.time()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model.loss(*x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    torch.cuda.synchronize()
    dt = (time.time() - t0) / steps
    n_params = sum(p.numel() for p in model.parameters()) / 1e6
    print(f"{model_name} {task} img {img} batch {batch}: {dt * 1e3:.0f} ms/step, {batch / dt:.1f} samples/s, "
          f"peak {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB, {n_params:.1f} M params, loss {loss.item():.3f}",
          flush=True)
    if task == "levir":
        model.eval()
        big = [torch.randn(1, 3, 1024, 1024, device=dev) for _ in range(2)]
        for wb in (1, batch):
            with torch.autocast("cuda", dtype=torch.bfloat16):
                sliding_window(model, tuple(big), img, img // 2, 2, window_batch=wb)
                torch.cuda.synchronize()
                t0 = time.time()
                out = sliding_window(model, tuple(big), img, img // 2, 2, window_batch=wb)
                torch.cuda.synchronize()
            print(f"  sliding window 1024 px pair (window {img}, stride {img // 2}, {wb} windows per call): "
                  f"{time.time() - t0:.2f} s, out {tuple(out.shape)}", flush=True)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="roma_base")
    p.add_argument("--img-size", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=8)
    a = p.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("gpu_check needs CUDA")
    print(f"device {torch.cuda.get_device_name()}, torch {torch.__version__}", flush=True)
    get_model_size(a.model)
    for task in ("levir", "spacenet"):
        print(f"\n=== step speed: {task}", flush=True)
        try:
            step_speed(a.model, task, a.img_size, a.batch_size)
        except Exception:  # noqa: BLE001 - report and go on to the next section
            traceback.print_exc()
        torch.cuda.empty_cache()
    print("\n=== run_dense end to end (synthetic LEVIR-style folder, roma_micro_base, CUDA)", flush=True)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            root = synthetic_levir(Path(tmp) / "levir")
            cfg = replace(DenseConfig(), task="levir", root=str(root), img_size=96, crop_size=128, epochs=8,
                          batch_size=8, lr=5e-4, eval_every=2, warmup_epochs=1.0, num_workers=2,
                          decoder_channels=(128, 64, 32, 32))
            size = get_model_size("roma_micro_base")
            t0 = time.time()
            m = run_dense(None, cfg, ModelConfig(name="roma_micro_base", img_size=size.img_size,
                                                 patch_size=size.patch_size), Path(tmp) / "out", "cuda")
            print({k: round(v, 2) for k, v in m.items()}, f"{time.time() - t0:.1f} s", flush=True)
    except Exception:  # noqa: BLE001
        traceback.print_exc()


if __name__ == "__main__":
    main()
