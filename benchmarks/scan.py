"""Selective-scan speed and memory: the fast scans against a naive per-step autograd loop.

    python benchmarks/scan.py                      # d = 192, 768; L = 144, 576, 2304 (CPU)
    python benchmarks/scan.py --dims 192 --lengths 144 576 --impls native fast chunked ref

Each (impl, d, L) runs forward + backward in its own subprocess, so that peak memory (the
process's high-water RSS above its baseline, or CUDA max_memory_allocated) is that config's
alone. Printed: ms per forward+backward (median of --iters after one warm-up; wall clock and CPU
time of the process, the steadier one on a shared machine), peak extra MiB, and the naive loop's
time over each other scan's from the same run.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time


def _peak_rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _reset_peak_rss() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def run_one(impl: str, d: int, L: int, batch: int, iters: int, device: str) -> dict:
    import torch

    from roma.models import scan

    fn = scan._IMPLS[impl]
    torch.manual_seed(0)
    n = 16
    dev = torch.device(device)
    mk = lambda *s: torch.randn(*s, device=dev)
    leaves = dict(u=mk(batch, d, L), delta=mk(batch, d, L) * 0.5 - 3, B=mk(batch, n, L), C=mk(batch, n, L),
                  z=mk(batch, d, L), D=mk(d), delta_bias=mk(d))
    A = -torch.arange(1, n + 1, device=dev, dtype=torch.float32).repeat(d, 1)
    for v in leaves.values():
        v.requires_grad_()
    A.requires_grad_()

    def step():
        y = fn(leaves["u"], leaves["delta"], A, leaves["B"], leaves["C"], leaves["D"], leaves["z"],
               leaves["delta_bias"], True)
        y.sum().backward()
        if dev.type == "cuda":
            torch.cuda.synchronize()

    step()  # warm-up
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        _reset_peak_rss()
        base = _peak_rss_mib()
    times, cpu = [], []
    for _ in range(iters):
        t0, c0 = time.perf_counter(), time.process_time()
        step()
        times.append((time.perf_counter() - t0) * 1e3)
        cpu.append((time.process_time() - c0) * 1e3)
    peak = ((torch.cuda.max_memory_allocated() - base) / 2**20 if dev.type == "cuda" else _peak_rss_mib() - base)
    times.sort()
    cpu.sort()
    return {"impl": impl, "d": d, "L": L, "batch": batch, "ms": times[len(times) // 2],
            "cpu_ms": cpu[len(cpu) // 2], "peak_mib": peak}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dims", type=int, nargs="+", default=[192, 768])
    p.add_argument("--lengths", type=int, nargs="+", default=[144, 576, 2304])
    p.add_argument("--impls", nargs="+", default=["native", "fast", "chunked", "ref"])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--ref-max-work", type=float, default=1e10,
                   help="skip the naive loop where d*L*L*batch exceeds this (its backward is O(L^2))")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--one", nargs=3, metavar=("IMPL", "D", "L"), help=argparse.SUPPRESS)
    args = p.parse_args()

    if args.one:
        import torch

        torch.set_num_threads(args.threads)
        impl, d, L = args.one[0], int(args.one[1]), int(args.one[2])
        print(json.dumps(run_one(impl, d, L, args.batch, args.iters, args.device)))
        return

    rows = []
    print(f"{'impl':<8}{'d':>6}{'L':>6}{'ms fwd+bwd':>12}{'CPU ms':>10}{'peak MiB':>10}", flush=True)
    for d in args.dims:
        for L in args.lengths:
            for impl in args.impls:
                if impl == "ref" and d * L * L * args.batch > args.ref_max_work:
                    print(f"{impl:<8}{d:>6}{L:>6}{'skipped (O(L^2), see --ref-max-work)':>40}", flush=True)
                    continue
                cmd = [sys.executable, __file__, "--one", impl, str(d), str(L), "--batch", str(args.batch),
                       "--iters", str(1 if impl == "ref" else args.iters), "--threads", str(args.threads),
                       "--device", args.device]
                res = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
                if res.returncode:
                    print(f"{impl:<8}{d:>6}{L:>6} failed: {res.stderr.strip().splitlines()[-1]}", flush=True)
                    continue
                row = json.loads(res.stdout.strip().splitlines()[-1])
                rows.append(row)
                print(f"{impl:<8}{d:>6}{L:>6}{row['ms']:>12.1f}{row['cpu_ms']:>10.1f}{row['peak_mib']:>10.1f}",
                      flush=True)
    by = {(r["impl"], r["d"], r["L"]): r for r in rows}
    print("\nratios (same run): naive loop / each scan")
    for (impl, d, L), f in sorted(by.items()):
        r = by.get(("ref", d, L))
        if impl != "ref" and r is not None:
            print(f"  {impl:<8} d={d:<4} L={L:<5} time x{r['ms'] / f['ms']:.1f}   CPU time x{r['cpu_ms'] / f['cpu_ms']:.1f}"
                  f"   peak memory x{r['peak_mib'] / max(f['peak_mib'], 1e-9):.2f}")


if __name__ == "__main__":
    main()
