"""High-resolution efficiency: RoMA-B (1 and 4 scan directions) against ViT-B/16, as resolution grows.

    python benchmarks/highres.py                                   # CPU: 224..1024 px, batch 1
    python benchmarks/highres.py --device cuda --resolutions 1248 2048 4096
    python benchmarks/highres.py --spec experiments/specs/highres_benchmark.yaml --out outputs/highres
    python benchmarks/highres.py --replot benchmarks/results/h200/highres  # redraw a committed run's figure

Same batch, dtype (bf16 autocast on GPU, fp32 on CPU) and warm-up for every model; each row names the
selective scan RoMA-B ran with (`scan`: cuda = mamba-ssm's kernels, or one of our PyTorch/C scans). Peak memory is
torch.cuda.max_memory_allocated on GPU, and on CPU the high-water RSS of a fresh subprocess per
config above its RSS before the model was built (weights + activations). An out-of-memory is recorded as OOM and the sweep goes on. Results: a table on stdout,
results.csv/json under --out, a log-log figure with fitted growth exponents (analysis.figures),
and MLflow when --tracking-uri is given. The paper's numbers (1248 px: RoMA-B 6526 MB, 11.43
samples/s; ViT-B 24531 MB, 4.99; 2048: 16934 MB, 4.37 vs OOM; 4096: 66357 MB, 1.15 vs OOM) are
printed beside ours.
"""
from __future__ import annotations

import argparse
import gc
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

from roma import atomic

MODELS = ("roma_base_uni", "roma_base_v3", "vit_b", "vit_b_math")
PAPER = {  # resolution -> model -> (MB, samples/s); None = OOM in the paper
    1248: {"roma_base": (6526, 11.43), "vit_b": (24531, 4.99)},
    2048: {"roma_base": (16934, 4.37), "vit_b": None},
    4096: {"roma_base": (66357, 1.15), "vit_b": None},
}
COLUMNS = ("model", "resolution", "batch", "dtype", "device", "scan", "status", "peak_mem_mb", "samples_per_s")
NO_SCAN = "none"  # the scan column of a ViT row


def build(model: str, resolution: int):
    """The encoder under test and its forward function (features only, no head)."""
    if model.startswith("roma_base"):
        from roma.models.encoder import RoMAEncoder

        enc = RoMAEncoder(768, 12, img_size=resolution, patch_size=16, directions=4 if model.endswith("v3") else 1)
        return enc, enc.forward_tokens
    if model.startswith("vit_b"):
        from roma.models.vit import vit_base_patch16

        vit = vit_base_patch16(img_size=resolution)
        return vit, vit.forward_features
    raise ValueError(f"unknown model {model!r}; choose from {MODELS}")


def scan_used(model: str, resolution: int, device) -> str:
    """The selective-scan backend RoMA-B runs at this resolution (roma.models.scan.resolve_backend: cuda
    = mamba-ssm's fused kernels; fast / chunked / native / ref = our PyTorch or C scans), NO_SCAN for ViT.
    The table and the figure name it: a result without mamba-ssm is not the fused path's."""
    if not model.startswith("roma_base"):
        return NO_SCAN
    import torch

    from roma.models.scan import resolve_backend

    return resolve_backend(torch.device(device), None, (resolution // 16) ** 2)


def is_oom(err: BaseException) -> bool:
    import torch

    return isinstance(err, (MemoryError, torch.cuda.OutOfMemoryError)) or "out of memory" in str(err).lower()


def measure(model: str, resolution: int, batch: int, device: str, warmup: int, iters: int,
            backward: bool = False) -> dict:
    """One config: samples/s and peak memory, or status OOM."""
    import torch

    from roma.models.vit import attention_backend

    dev = torch.device(device)
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    row = {"model": model, "resolution": resolution, "batch": batch, "dtype": str(dtype).split(".")[-1],
           "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
           "scan": scan_used(model, resolution, dev), "status": "ok", "peak_mem_mb": float("nan"), "samples_per_s": float("nan")}
    net = x = None
    try:
        net, fwd = build(model, resolution)
        net = net.to(dev).train(backward)
        x = torch.randn(batch, 3, resolution, resolution, device=dev)
        grad_ctx = torch.enable_grad if backward else torch.inference_mode

        def step():
            with grad_ctx(), torch.autocast(dev.type, dtype=dtype, enabled=dev.type == "cuda"), \
                    attention_backend("math" if model.endswith("_math") else "sdpa"):
                out = fwd(x)
                if backward:
                    out.float().mean().backward()
            if dev.type == "cuda":
                torch.cuda.synchronize()

        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        for _ in range(warmup):
            step()
        t0 = time.perf_counter()
        for _ in range(iters):
            step()
        row["samples_per_s"] = batch * iters / (time.perf_counter() - t0)
        if dev.type == "cuda":
            row["peak_mem_mb"] = torch.cuda.max_memory_allocated(dev) / 2**20
    except Exception as err:  # noqa: BLE001 - only OOMs are swallowed, see below
        if not is_oom(err):
            raise
        row["status"] = "OOM"
    finally:
        del net, x
        gc.collect()
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    return row


def _peak_rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def measure_isolated(model, resolution, batch, warmup, iters, backward) -> dict:
    """CPU: run `measure` in a fresh process so its high-water RSS is this config's alone."""
    cmd = [sys.executable, __file__, "--one", model, str(resolution), "--batch", str(batch),
           "--warmup", str(warmup), "--iters", str(iters)] + (["--backward"] if backward else [])
    res = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
    if res.returncode:
        if "MemoryError" in res.stderr or res.returncode in (-9, 137):
            return {"model": model, "resolution": resolution, "batch": batch, "dtype": "float32", "device": "cpu",
                    "scan": scan_used(model, resolution, "cpu"), "status": "OOM", "peak_mem_mb": float("nan"), "samples_per_s": float("nan")}
        raise RuntimeError(f"{model} at {resolution} px failed:\n{res.stderr[-2000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def format_table(rows: list[dict]) -> str:
    """Markdown table of our rows, with the paper's number beside each where it has one."""
    lines = ["| model | scan | px | batch | dtype | peak MB | samples/s | paper MB | paper samples/s |",
             "|---|---|---:|---:|---|---:|---:|---:|---:|"]
    for r in rows:
        paper = PAPER.get(r["resolution"], {}).get("vit_b" if r["model"].startswith("vit") else "roma_base", "n/a")
        p_mb, p_sps = ("OOM", "OOM") if paper is None else (("", "") if paper == "n/a" else paper)
        mem = "OOM" if r["status"] == "OOM" else f"{r['peak_mem_mb']:.0f}"
        sps = "OOM" if r["status"] == "OOM" else f"{r['samples_per_s']:.3g}"
        lines.append(f"| {r['model']} | {r.get('scan', '?')} | {r['resolution']} | {r['batch']} | {r['dtype']} | {mem} | {sps} | {p_mb} | {p_sps} |")
    return "\n".join(lines)


def growth_exponents(rows: list[dict]) -> dict[str, dict[str, float]]:
    """Per model: slope of log(memory) and log(1/speed) against log(token count)."""
    import numpy as np

    out = {}
    for model in sorted({r["model"] for r in rows}):
        ok = [r for r in rows if r["model"] == model and r["status"] == "ok"]
        if len(ok) < 2:
            continue
        tokens = np.log([(r["resolution"] / 16) ** 2 for r in ok])
        fit = lambda y: float(np.polyfit(tokens, np.log(y), 1)[0])
        out[model] = {"time": fit([1 / r["samples_per_s"] for r in ok])}
        mem = [r["peak_mem_mb"] for r in ok]
        if all(m > 0 and math.isfinite(m) for m in mem):
            out[model]["memory"] = fit(mem)
    return out


def load_spec(path: Path) -> dict:
    from roma import yamlio

    allowed = {"kind", "description", "resolutions", "models", "batch", "warmup", "iters", "backward", "device"}
    spec = yamlio.load(path.read_text()) or {}
    bad = set(spec) - allowed
    if bad:
        raise ValueError(f"{path}: unknown key(s) {sorted(bad)}; allowed: {sorted(allowed)}")
    unknown = set(spec.get("models", [])) - set(MODELS)
    if unknown:
        raise ValueError(f"{path}: models: unknown {sorted(unknown)}; choose from {MODELS}")
    return spec


def log_to_mlflow(rows, exps, uri: str, experiment: str, out: Path) -> None:
    import mlflow

    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment(experiment)
    for r in rows:
        with mlflow.start_run(run_name=f"{r['model']}-{r['resolution']}px"):
            mlflow.log_params({k: r[k] for k in ("model", "resolution", "batch", "dtype", "device", "status")})
            if r["status"] == "ok":
                mlflow.log_metrics({"peak_mem_mb": r["peak_mem_mb"], "samples_per_s": r["samples_per_s"]})
            for f in out.glob("highres.*"):
                mlflow.log_artifact(str(f))


def read_results(folder: Path) -> "pd.DataFrame":
    """DIR/results.csv as written by --out; a table that does not say which scan RoMA ran with is refused."""
    import pandas as pd

    path = Path(folder) / "results.csv"
    if not path.is_file():
        raise SystemExit(f"error: {path} does not exist (a folder written by benchmarks/highres.py --out)")
    df = pd.read_csv(path, keep_default_na=False, na_values=[""])
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise SystemExit(f"error: {path}: no column(s) {missing}; a table without `scan` does not say which "
                         "selective scan RoMA-B ran with (cuda = mamba-ssm, fast/chunked/native/ref = ours)")
    return df


def replot(folder: Path, out: Path) -> list[dict]:
    """The committed table -> the same text table and the figure, in `out` (by default beside the table)."""
    from analysis.figures import plot_highres

    df = read_results(folder)
    rows = df.to_dict("records")
    print(format_table(rows))
    for path in plot_highres(df, out):
        print(f"wrote {path}")
    return rows


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--spec", type=Path, help="a YAML file with resolutions/models/batch/warmup/iters/backward/device")
    p.add_argument("--device", default=None, help="cpu | cuda (default: cuda when available)")
    p.add_argument("--resolutions", type=int, nargs="+")
    p.add_argument("--models", nargs="+", choices=MODELS)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--warmup", type=int, default=None)
    p.add_argument("--iters", type=int, default=None)
    p.add_argument("--backward", action="store_true", help="time forward + backward")
    p.add_argument("--out", type=Path, default=None, help="folder for results.csv/json and the figure")
    p.add_argument("--tracking-uri", default=None, help="also log each config as an MLflow run")
    p.add_argument("--experiment", default="highres_benchmark")
    p.add_argument("--replot", type=Path, metavar="DIR",
                   help="redraw the figure and reprint the table from DIR/results.csv (a committed run); nothing is measured")
    p.add_argument("--one", nargs=2, metavar=("MODEL", "RES"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.replot:
        return replot(args.replot, args.out or args.replot)
    import torch

    if args.one:
        torch.set_num_threads(min(2, os.cpu_count() or 1))
        import roma.models.encoder, roma.models.vit  # noqa: F401,E401 - imports count in the baseline

        base = _peak_rss_mb()  # what the interpreter, torch and roma hold before the model exists
        row = measure(args.one[0], int(args.one[1]), args.batch, "cpu", args.warmup or 1, args.iters or 2,
                      args.backward)
        row["peak_mem_mb"] = _peak_rss_mb() - base  # weights + activations of this config
        print(json.dumps(row))
        return [row]

    spec = load_spec(args.spec) if args.spec else {}
    device = args.device or spec.get("device") or ("cuda" if torch.cuda.is_available() else "cpu")
    gpu = device.startswith("cuda")
    resolutions = args.resolutions or spec.get("resolutions") or ([1248, 2048, 4096] if gpu else [224, 448, 672, 1024])
    models = args.models or spec.get("models") or (list(MODELS) if gpu else ["roma_base_uni", "roma_base_v3", "vit_b"])
    warmup = args.warmup or spec.get("warmup") or (3 if gpu else 1)
    iters = args.iters or spec.get("iters") or (5 if gpu else 2)
    batch = spec.get("batch", args.batch)
    backward = args.backward or bool(spec.get("backward", False))

    rows = []
    for res in resolutions:
        for model in models:
            row = (measure(model, res, batch, device, warmup, iters, backward) if gpu
                   else measure_isolated(model, res, batch, warmup, iters, backward))
            rows.append(row)
            print(f"{model:<15}{res:>6} px  {row['scan']:<8}{row['status']:<4}  {row['peak_mem_mb']:>9.0f} MB  "
                  f"{row['samples_per_s']:>8.3g} samples/s", flush=True)
    print()
    print(format_table(rows))
    exps = growth_exponents(rows)
    print("\ngrowth exponents vs token count (1 = linear, 2 = quadratic):")
    for model, e in exps.items():
        print(f"  {model:<15} " + "  ".join(f"{k} {v:.2f}" for k, v in e.items()))
    ratios = {}
    for res in resolutions:
        r = {row["model"]: row for row in rows if row["resolution"] == res and row["status"] == "ok"}
        if "roma_base_uni" in r and "vit_b" in r:
            ratios[res] = (r["roma_base_uni"]["samples_per_s"] / r["vit_b"]["samples_per_s"],
                           r["roma_base_uni"]["peak_mem_mb"] / r["vit_b"]["peak_mem_mb"])
    for res, (speed, mem) in ratios.items():
        print(f"  {res} px: RoMA-B (uni) is {speed:.2f}x ViT-B's speed in {100 * mem:.1f}% of its memory")

    if args.out:
        import pandas as pd

        args.out.mkdir(parents=True, exist_ok=True)
        df = pd.DataFrame(rows, columns=COLUMNS)
        with atomic.replacing(args.out / "results.csv") as tmp:
            df.to_csv(tmp, index=False)
        atomic.write_json(args.out / "results.json", {"rows": rows, "growth_exponents": exps})
        try:
            from analysis.figures import plot_highres

            plot_highres(df, args.out)
        except Exception as err:  # noqa: BLE001 - the numbers above are the result; the figure is a view
            print(f"figure not drawn: {type(err).__name__}: {err}")
        if args.tracking_uri:
            log_to_mlflow(rows, exps, args.tracking_uri, args.experiment, args.out)
    return rows


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, for analysis/
    main()
