"""The prepared GPU check: one command on one H100/H200, within 8 minutes, everything worth recording.

    PYTHONPATH=. python benchmarks/gpu_check.py [--out DIR] [--wheels .whl]     # on the GPU
    PYTHONPATH=. python benchmarks/gpu_check.py --smoke                         # CPU, tiny: no bugs

0. mamba-ssm: imported, or installed from the carried wheels (benchmarks/device_kernels.py; never
   compiled on the GPU while wheels are there);
1. the GPU-marked tests (PyTorch scans on CUDA; the fused kernel against the fast scan, uni and
   v3, fp32 and bf16, outputs and every gradient);
2. mamba-ssm's selective scan against our scans;
3. roma_base, 192 px, batch 64, bf16 autocast: the training step (forward + backward + clip +
   fused AdamW) with scan=cuda (mamba_inner_fn) and scan=fast: images/s, peak memory, model FLOPs
   utilisation, the 1,500 images/s target, and a profile of the fused step's top CUDA kernels;
4. the high-resolution sweep (1248, 2048, 4096 px, batch 1, bf16, forward): RoMA-B (fused; 1 and
   4 directions) against ViT-B/16 with fused SDPA and with materialised attention, beside the
   paper's numbers and targets;
5. roma_large as in 3.
Sections run in that order while the time budget (--budget-s) lasts (PLANNED_S: the planned
seconds per section, about 6 min in all, so that the run ends well inside an 8-minute call);
each reports its own failure and the script goes on. Everything printed is also written to <out>/<gpu>/gpu_check.log, with
train_step.json, throughput.csv (one row per measured model/backend), highres/, and
throughput_table_rows.csv: the images/s in the planning table's format (experiments/throughput.csv),
merged into it by `python benchmarks/gpu_check.py --merge-rows <that file>` on any machine
(roma.launch.budget owns that table: it reads it for the budgets and merges measured rows in).
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import re
import subprocess
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)  # subprocesses

from benchmarks.device_kernels import ensure_kernels, section  # noqa: E402 - after the path is set
from roma.launch.budget import COLUMNS, TABLE, merge_into_table  # noqa: E402 - the planning table's owner

TARGET_STEP_IPS = 1500.0  # roma_base training step, images/s (the target, 3.4x the PyTorch scan)
# Dense bf16 tensor-core peak, TFLOP/s, by a substring of torch.cuda.get_device_name (vendor sheets)
PEAK_BF16_TFLOPS = {"H200": 989.4, "H100 PCIe": 756.0, "H100": 989.4, "A100": 312.0, "L40S": 362.1, "A10": 125.0}
HIGHRES_TARGETS = {1248: (6526.0, 11.43), 4096: (66357.0, None)}  # px -> (max MB, min samples/s): the paper's
# Planned seconds per section on one H100/H200 (the h200 run of 2026-12 took 91 s for tests + base +
# highres without mamba-ssm); with carried wheels the kernels step is a pip install of two small
# wheels and one import. The default --budget-s starts no section after 300 s, so the worst case
# is 300 s + the longest section (large, 90 s) = 6.5 min, well inside 8 min.
PLANNED_S = {"kernels": 30, "tests": 60, "scan": 15, "base": 90, "highres": 90, "large": 90}
DEFAULT_BUDGET_S = 300.0


class Tee:
    """stdout to the console and to the log file."""

    def __init__(self, stream, path: Path):
        self.stream, self.file = stream, open(path, "a", buffering=1)  # noqa: SIM115 - lives as long as the run

    def write(self, s):
        self.stream.write(s)
        self.file.write(s)
        return len(s)

    def flush(self):
        self.stream.flush()
        self.file.flush()


def gpu_slug() -> str:
    import torch

    name = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    m = re.search(r"(H200|H100|A100|L40S|A10|V100|B200|GH200)", name)
    return (m.group(1) if m else re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")).lower()


def peak_tflops(override: float | None) -> float | None:
    import torch

    if override:
        return override
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)




# ----------------------------------------------------------------------------- 1-2. tests, kernel vs scans
def check_tests(smoke: bool) -> None:
    section("GPU-marked tests")
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", "-rs",
                          "tests/test_scan.py", "tests/test_models.py", "tests/test_fused.py"],
                         cwd=ROOT, capture_output=True, text=True)
    lines = res.stdout.strip().splitlines()
    print("\n".join(lines if res.returncode not in (0, 5) else lines[-12:]))


def check_scan_kernel(smoke: bool) -> None:
    import torch

    from roma.models import scan

    section("mamba-ssm selective scan vs the PyTorch scans")
    if not torch.cuda.is_available() or scan.mamba_ssm_kernels() is None:
        print("mamba-ssm unavailable here: nothing to compare")
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


# ----------------------------------------------------------------------------- 3/5. training step
def train_step(name: str, img: int, batch: int, steps: int, backends: list[str], peak: float | None,
               profile: bool, results: list[dict], warmup: int = 3) -> None:
    import torch

    from roma.config import AresConfig
    from roma.models import create_model
    from roma.models.scan import resolve_backend

    cuda = torch.cuda.is_available()
    dev = torch.device("cuda" if cuda else "cpu")
    section(f"{name} {img} px, batch {batch}, {'bf16 autocast' if cuda else 'fp32 (CPU)'}: "
            "training step (fwd+bwd+clip+AdamW)")
    print(f"device: {torch.cuda.get_device_name() if cuda else 'cpu'}  torch {torch.__version__}")
    torch.manual_seed(0)
    fwd_flops, what = forward_flops(create_model(name, img_size=img, ares=AresConfig(), msp=msp_for(img)))
    flops = 3 * fwd_flops  # training = forward + backward (about 2x forward)
    print(f"model FLOPs per image: {flops / 1e9:.1f} G ({what} x 3)")
    profiled = not profile
    for backend in backends:
        os.environ["ROMA_SCAN"] = backend
        try:
            resolve_backend(dev)
        except RuntimeError as err:
            print(f"scan={backend:<8} skipped: {err}")
            continue
        torch.manual_seed(0)
        model = create_model(name, img_size=img, ares=AresConfig(), msp=msp_for(img))
        model = model.to(dev)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), fused=cuda)
        x = torch.randn(batch, 3, img, img, device=dev)
        region = torch.tensor([[2, 3, 6] if img >= 192 else [0, 0, 2]] * batch, device=dev)  # ARES region
        angle = torch.full((batch,), 20.0, device=dev)

        def step():
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=cuda):
                out = model(x, region=region, angle=angle)
            out["loss"].backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 3.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            return out["loss"]

        sync = torch.cuda.synchronize if cuda else (lambda: None)
        for _ in range(warmup):
            step()
        sync()
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        for _ in range(steps):
            loss = step()
        sync()
        ips = batch * steps / (time.perf_counter() - t0)
        peak_gib = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
        mfu = ips * flops / (peak * 1e12) if peak else float("nan")
        row = {"model": name, "img_size": img, "batch": batch, "dtype": "bfloat16" if cuda else "float32",
               "scan": backend, "gpu": torch.cuda.get_device_name() if cuda else "cpu",
               "images_per_s": round(ips, 1), "peak_mem_gib": round(peak_gib, 2),
               "train_gflops_per_image": round(flops / 1e9, 2), "flops_counted": what, "mfu": round(mfu, 4),
               "loss": round(loss.item(), 4), "torch": torch.__version__, "date": time.strftime("%Y-%m-%d")}
        results.append(row)
        print(f"scan={backend:<8} {ips:8.1f} images/s   loss {row['loss']:.4f}   peak {peak_gib:.1f} GiB   "
              f"MFU {100 * mfu:.1f}%" + ("" if peak else " (peak FLOP/s of this device unknown: --peak-tflops)"))
        if name == "roma_base" and backend == "cuda" and cuda:
            verdict = "meets" if ips >= TARGET_STEP_IPS else "BELOW"
            print(f"target >= {TARGET_STEP_IPS:.0f} images/s: {verdict} ({ips:.0f})")
        if not profiled:
            _profile(step, cuda)
            profiled = True
        del model, opt
        if cuda:
            torch.cuda.empty_cache()
    os.environ.pop("ROMA_SCAN", None)


def msp_for(img: int):
    from roma.config import MspConfig

    return MspConfig(scales=(6,) if img >= 96 else (2,))  # 6x6-patch blocks at 192 px; smoke sizes: 2x2


def forward_flops(model) -> tuple[float, str]:
    """Forward FLOPs per image from the registry: the whole pretraining model where the registry
    counts it (pretrain_flops), else the encoder (encoder_flops; the decoder is then not counted)."""
    from roma.models import registry

    if hasattr(registry, "pretrain_flops"):
        return registry.pretrain_flops(model), "registry.pretrain_flops: encoder + decoder forward"
    return registry.encoder_flops(model), "registry.encoder_flops: encoder forward; decoder not counted"


def _profile(step, cuda: bool) -> None:
    """Where the step's time goes: the top kernels (CUDA) or ops (CPU) over two steps."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=acts) as prof:
        for _ in range(2):
            step()
        if cuda:
            torch.cuda.synchronize()
    key = "self_cuda_time_total" if cuda else "self_cpu_time_total"
    print(f"profile, 2 steps, top 15 by {key}:")
    print(prof.key_averages().table(sort_by=key, row_limit=15, max_name_column_width=60))


# ----------------------------------------------------------------------------- 4. high resolution
def check_highres(out: Path, smoke: bool) -> None:
    from benchmarks import highres

    section("high resolution: RoMA-B (fused mamba-ssm when installed) vs ViT-B/16 (batch 1, forward)")
    if smoke:
        argv = ["--device", "cpu", "--resolutions", "32", "64", "--models", "roma_base_uni", "vit_b",
                "--warmup", "1", "--iters", "1"]
    else:
        argv = ["--device", "cuda", "--resolutions", "1248", "2048", "4096", "--warmup", "2", "--iters", "3"]
    rows = highres.main(argv + ["--out", str(out / "highres")])
    print("\ntargets (the paper's RoMA-B):")
    for r in rows:
        if not r["model"].startswith("roma_base") or r["resolution"] not in HIGHRES_TARGETS:
            continue
        max_mb, min_sps = HIGHRES_TARGETS[r["resolution"]]
        ok_mem = r["status"] == "ok" and r["peak_mem_mb"] <= max_mb
        line = f"  {r['model']:<14} {r['resolution']} px: {r['peak_mem_mb']:.0f} MB <= {max_mb:.0f}: {'yes' if ok_mem else 'NO'}"
        if min_sps:
            line += f";  {r['samples_per_s']:.2f} samples/s >= {min_sps}: {'yes' if r['samples_per_s'] >= min_sps else 'NO'}"
        print(line)


# ----------------------------------------------------------------------------- the planning table


def table_rows(results: list[dict], out: Path) -> list[dict]:
    """One `measured` row per model in the planning table's format: the fused path where it ran."""
    rows = []
    for model in dict.fromkeys(r["model"] for r in results):
        mine = {r["scan"]: r for r in results if r["model"] == model}
        r = mine.get("cuda") or mine.get("fast")
        path = "fused mamba-ssm (mamba_inner_fn)" if r["scan"] == "cuda" else "fast PyTorch scan (no mamba-ssm)"
        gflops = r["train_gflops_per_image"] / 3 if r["flops_counted"].startswith("registry.pretrain_flops") else ""
        rows.append({"model": model, "img_size": r["img_size"], "gpu_type": out.name, "images_per_s": r["images_per_s"],
                     "gflops": round(gflops, 4) if gflops else "", "basis": "measured", "scaled_from": "", "factor": "",
                     "source": f"{r['gpu']}, torch {r['torch']}, {r['date']}, {r['dtype']} autocast, scan={r['scan']}: "
                               f"{path}, batch {r['batch']}, ARES + MSP, training step with data excluded (batch "
                               f"already on the GPU; an upper bound when the loader keeps up): benchmarks/gpu_check.py, "
                               f"benchmarks/results/{out.name}/train_step.json"})
    return rows


# ----------------------------------------------------------------------------- main
def write_throughput(rows: list[dict], out: Path) -> None:
    if not rows:
        return
    tmp = out / "throughput.csv.tmp"
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, out / "throughput.csv")
    (out / "train_step.json").write_text(json.dumps(rows, indent=1) + "\n")
    table = table_rows(rows, out)
    with open(out / "throughput_table_rows.csv", "w", newline="") as f:  # experiments/throughput.csv's format
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        w.writerows(table)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=None,
                   help="results root (default: $OUT on the device machine, else benchmarks/results); "
                        "files go to <out>/<gpu>/")
    p.add_argument("--wheels", type=Path, default=ROOT / ".whl", help="carried wheels (and sdists under src/)")
    p.add_argument("--smoke", action="store_true", help="tiny sizes on any device: checks the script, measures nothing")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--budget-s", type=float, default=DEFAULT_BUDGET_S,
                   help=f"start no section after this many seconds (planned per section: {PLANNED_S})")
    p.add_argument("--peak-tflops", type=float, default=None, help="the device's dense bf16 peak, for MFU")
    p.add_argument("--skip", nargs="*", default=[], choices=["kernels", "tests", "scan", "base", "highres", "large"])
    p.add_argument("--merge-rows", type=Path, default=None, metavar="ROWS_CSV",
                   help="no measuring: merge a run's throughput_table_rows.csv into --table and exit")
    p.add_argument("--table", type=Path, default=TABLE, help="the planning table (default: experiments/throughput.csv)")
    args = p.parse_args(argv)
    if args.merge_rows:
        if not args.table.exists():
            sys.exit(f"{args.table}: no planning table here to merge into")
        merge_into_table(args.table, list(csv.DictReader(open(args.merge_rows))))
        print(f"merged {args.merge_rows} into {args.table}")
        return
    import torch

    if not torch.cuda.is_available() and not args.smoke:
        sys.exit("gpu_check needs a CUDA GPU (or --smoke, which only checks the script on CPU)")
    root = args.out or (Path(os.environ["OUT"]) if os.environ.get("OUT") else ROOT / "benchmarks" / "results")
    out = root / (gpu_slug() + ("_smoke" if args.smoke else ""))
    out.mkdir(parents=True, exist_ok=True)
    sys.stdout = Tee(sys.stdout, out / "gpu_check.log")
    print(f"gpu_check {time.strftime('%Y-%m-%d %H:%M:%S')}  torch {torch.__version__}  -> {out}")
    peak = peak_tflops(args.peak_tflops)
    rows: list[dict] = []
    batch, steps, img, warmup = (2, 1, 64, 1) if args.smoke else (args.batch, args.steps, 192, 3)
    base, large = ("roma_micro_tiny", "roma_micro_small") if args.smoke else ("roma_base", "roma_large")
    backends = ["cuda", "fast"]
    checks = [("kernels", lambda: ensure_kernels(args.wheels, out, args.smoke)),
              ("tests", lambda: check_tests(args.smoke)),
              ("scan", lambda: check_scan_kernel(args.smoke)),
              ("base", lambda: train_step(base, img, batch, steps, backends, peak, True, rows, warmup)),
              ("highres", lambda: check_highres(out, args.smoke)),
              ("large", lambda: train_step(large, img, batch, steps, backends, peak, False, rows, warmup))]
    print(f"planned seconds per section: {PLANNED_S}; no section starts after {args.budget_s:.0f} s")
    t0 = time.time()
    for name, check in checks:
        if name in args.skip:
            continue
        if time.time() - t0 > args.budget_s:
            print(f"\n=== {name}: skipped, the {args.budget_s:.0f} s budget is spent")
            continue
        t = time.time()
        try:
            check()
        except Exception:  # noqa: BLE001 - report and go on to the next section
            traceback.print_exc(file=sys.stdout)
        print(f"[{name}: {time.time() - t:.0f} s]", flush=True)
        write_throughput(rows, out)
    print(f"\ngpu_check finished in {time.time() - t0:.0f} s; results in {out}")


if __name__ == "__main__":
    main()
