"""The prepared GPU check: run on one H100/H200 in a few minutes, print everything worth recording.

    PYTHONPATH=. python benchmarks/gpu_check.py [--out DIR] [--skip-highres]

1. the GPU-marked tests (the PyTorch scans on CUDA against the reference);
2. mamba-ssm's kernel against our scans, when mamba-ssm is installed;
3. roma_base at 192 px, batch 64, bf16 autocast: training step images/s (forward + backward +
   AdamW), with each available scan backend;
4. the high-resolution sweep: roma_base (1 and 4 directions) and ViT-B/16 at 1248, 2048, 4096 px.
Each section reports its own failure and the script goes on.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def section(title):
    print(f"\n=== {title}", flush=True)


def check_tests() -> None:
    section("GPU-marked tests")
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider",
                          "tests/test_scan.py", "tests/test_models.py"],
                         cwd=ROOT, capture_output=True, text=True)
    print("\n".join(res.stdout.strip().splitlines()[-8:]))


def check_mamba_ssm() -> None:
    import torch

    from roma.models import scan

    section("mamba-ssm kernel vs the PyTorch scans")
    if scan.mamba_ssm_kernels() is None:
        print("mamba-ssm not installed here: the cuda backend is unavailable; auto selects 'chunked' on GPU")
        return
    torch.manual_seed(0)
    b, d, n, L = 4, 256, 16, 576
    dev = "cuda"
    args = [torch.randn(b, d, L, device=dev), torch.randn(b, d, L, device=dev) * 0.5 - 3,
            -torch.arange(1, n + 1, device=dev, dtype=torch.float32).repeat(d, 1),
            torch.randn(b, n, L, device=dev), torch.randn(b, n, L, device=dev), torch.randn(d, device=dev),
            torch.randn(b, d, L, device=dev), torch.randn(d, device=dev)]
    y_cuda = scan.selective_scan_cuda(*args, True)
    for name in ("fast", "chunked"):
        y = getattr(scan, f"selective_scan_{name}")(*args, True)
        print(f"max |cuda - {name}| / max|cuda| = {((y - y_cuda).abs().max() / y_cuda.abs().max()).item():.2e}")


def check_train_step(batch: int, steps: int) -> None:
    import torch

    from roma.config import AresConfig, MspConfig
    from roma.models import create_model
    from roma.models.scan import mamba_ssm_kernels

    section(f"roma_base 192 px, batch {batch}, bf16 autocast: training step (fwd+bwd+AdamW)")
    print(f"device: {torch.cuda.get_device_name()}  torch {torch.__version__}")
    backends = ["chunked", "fast"] + (["cuda"] if mamba_ssm_kernels() else [])
    for backend in backends:
        os.environ["ROMA_SCAN"] = backend
        torch.manual_seed(0)
        model = create_model("roma_base", ares=AresConfig(), msp=MspConfig(scales=(6,))).cuda()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), fused=True)
        x = torch.randn(batch, 3, 192, 192, device="cuda")
        region = torch.tensor([[2, 3, 6]] * batch, device="cuda")
        angle = torch.full((batch,), 20.0, device="cuda")
        torch.cuda.reset_peak_memory_stats()

        def step():
            with torch.autocast("cuda", dtype=torch.bfloat16):
                out = model(x, region=region, angle=angle)
            out["loss"].backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 3.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            return out["loss"].item()

        for _ in range(3):
            step()
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(steps):
            loss = step()
        torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        print(f"scan={backend:<8} {batch * steps / dt:8.1f} images/s   loss {loss:.4f}   "
              f"peak {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")
        del model, opt
        torch.cuda.empty_cache()
    os.environ.pop("ROMA_SCAN", None)


def check_highres(out: Path | None) -> None:
    from benchmarks import highres

    section("high resolution: RoMA-B vs ViT-B/16 (bf16, batch 1, forward)")
    argv = ["--device", "cuda", "--resolutions", "1248", "2048", "4096", "--warmup", "2", "--iters", "3"]
    if out:
        argv += ["--out", str(out / "highres")]
    highres.main(argv)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", type=Path, default=Path(os.environ["OUT"]) if os.environ.get("OUT") else None)
    p.add_argument("--skip-highres", action="store_true")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=10)
    args = p.parse_args()
    import torch

    if not torch.cuda.is_available():
        sys.exit("gpu_check needs a CUDA GPU")
    t0 = time.time()
    checks = [check_tests, check_mamba_ssm, lambda: check_train_step(args.batch, args.steps)]
    if not args.skip_highres:
        checks.append(lambda: check_highres(args.out))
    for check in checks:
        try:
            check()
        except Exception:  # noqa: BLE001 - report and go on to the next section
            traceback.print_exc()
    print(f"\ngpu_check finished in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
