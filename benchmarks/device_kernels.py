"""mamba-ssm on the device machine, from what was carried there: section 0 of benchmarks/gpu_check.py.

Used if it imports; else the carried wheels under --wheels (cross-built without a GPU:
`slurm/build_cuda_wheels.py build --arch 9.0 --python 3.12 --torch 2.11.0`, docs/cuda.md) are
installed with `pip install --no-index --no-deps --target <wheels>/site` and that folder is put on
the import path. When wheels are there nothing is ever compiled on the GPU, even if they fail to
import (the error is printed and the check goes on with the PyTorch scans). Only with no wheels and
the carried sdists in --wheels/src are they built there (minutes; the built wheels are copied to the
output folder for the next session to carry). `--smoke` on CPU: a PyTorch stand-in for the kernels.
"""
from __future__ import annotations

import functools
import importlib
import importlib.util
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAX_RETURNED_FILE = 16 * 2**20  # the device machine returns files up to this size


def section(title):
    print(f"\n=== {title}", flush=True)


def wheel_install_command(wheels: list[Path], target: Path) -> list[str]:
    """Offline, without dependencies (the environment's torch, triton and einops serve), into target:
    never a source build (only .whl files are named) and the environment itself is left untouched."""
    bad = [w for w in wheels if w.suffix != ".whl"]
    if bad:
        raise ValueError(f"not wheels: {bad}")
    return [sys.executable, "-m", "pip", "install", "--no-index", "--no-deps", "--upgrade", "--target", str(target),
            *map(str, wheels)]


def _pip_install(wheels: list[Path], target: Path) -> None:
    """pip install --no-index --no-deps --target target, then target first on the import path (and subprocesses')."""
    t0 = time.time()
    subprocess.run(wheel_install_command(wheels, target), check=True)
    print(f"installed into {target} in {time.time() - t0:.1f} s", flush=True)
    sys.path.insert(0, str(target))
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(target), os.environ.get("PYTHONPATH")) if p)


def carried_wheels(wheel_dir: Path, bcw) -> list[Path]:
    """One wheel per package (the newest name) from wheel_dir, or [] when any is missing."""
    found = [sorted(wheel_dir.glob(f"{prefix}-{bcw.PINS[p]}-*.whl"))[-1:] for p, (prefix, _) in bcw.PACKAGES.items()]
    return [w for ws in found for w in ws] if all(found) else []


def _kernels_now():
    from roma.models import scan

    importlib.invalidate_caches()
    scan.mamba_ssm_kernels.cache_clear()
    return scan.mamba_ssm_kernels()


def ensure_kernels(wheel_dir: Path, out: Path, smoke: bool) -> None:
    import torch

    bcw_path = ROOT / "slurm" / "build_cuda_wheels.py"
    spec = importlib.util.spec_from_file_location("build_cuda_wheels", bcw_path)
    bcw = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bcw)

    section("mamba-ssm kernels")
    src = wheel_dir / "src"
    if _kernels_now() is not None:
        print(_kernel_versions())
        return
    if not torch.cuda.is_available():
        print("no CUDA device: the PyTorch scans only")
        if smoke:
            _cpu_stand_in()
        if smoke and src.is_dir() and any(src.glob("*.tar.gz")):  # the build plan, checked without compiling
            subprocess.run([sys.executable, str(bcw_path), "build", "--src", str(src), "--dest", str(wheel_dir),
                            "--arch", "9.0", "--dry-run"], check=True)
        return
    wheels = carried_wheels(wheel_dir, bcw)
    site = wheel_dir / "site"
    if wheels:
        print("installing the carried wheels: " + ", ".join(w.name for w in wheels), flush=True)
        _pip_install(wheels, site)
        t0 = time.time()
        if _kernels_now() is not None:
            print(f"{_kernel_versions()} (import {time.time() - t0:.1f} s)")
            return
        print("the carried wheels do not import here (built for another torch, Python or GPU?); not compiling "
              "on the GPU: measuring without mamba-ssm. The import error:", flush=True)
        _print_import_error()
        return
    if not (src.is_dir() and any(src.glob("*.tar.gz"))):
        print(f"no wheels and no sdists under {wheel_dir}: run `python slurm/build_cuda_wheels.py fetch --dest {src}` "
              "where there is internet and carry the folder; measuring without mamba-ssm")
        return
    t0 = time.time()
    subprocess.run([sys.executable, str(bcw_path), "build", "--src", str(src), "--dest", str(wheel_dir)], check=True)
    print(f"built in {time.time() - t0:.0f} s", flush=True)
    wheels = carried_wheels(wheel_dir, bcw)
    if not wheels:
        raise RuntimeError(f"the build left no wheel of each package in {wheel_dir}")
    _pip_install(wheels, site)
    (out / "wheels").mkdir(exist_ok=True)
    for w in wheels:  # brought back for the next session to carry (and skip the build)
        if w.stat().st_size <= MAX_RETURNED_FILE:
            shutil.copy2(w, out / "wheels" / w.name)
        print(f"{w.name}: {w.stat().st_size / 2**20:.1f} MiB", flush=True)
    print(_kernel_versions() if _kernels_now() is not None else "mamba-ssm still does not import after the build")


def _print_import_error() -> None:
    for mod in ("selective_scan_cuda", "causal_conv1d_cuda"):
        try:
            import torch  # noqa: F401 - the extensions need its libraries loaded first

            importlib.import_module(mod)
        except Exception as err:  # noqa: BLE001 - reported, not handled
            print(f"  import {mod}: {type(err).__name__}: {err}")


def _cpu_stand_in() -> None:
    """Smoke runs only: mamba-ssm's entry points replaced by the PyTorch statement of their
    contract (roma.models.fused.mamba_inner_ref), so that scan=cuda runs this script's fused
    code path on CPU. Measures nothing about the kernel."""
    from roma.models import fused, scan

    conv = lambda x, w, b, activation=None: scan.causal_conv1d(x, w.unsqueeze(1), b, backend="fast")
    inner = functools.partial(fused.mamba_inner_ref, scan_fn=scan.selective_scan_fast)
    kernels = scan.Kernels(scan.selective_scan_fast, conv, inner, "cpu")
    scan.mamba_ssm_kernels = lambda: kernels
    print("smoke: a CPU stand-in for mamba-ssm (its contract in PyTorch) serves scan=cuda in this process")


def _kernel_versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    def v(name):
        try:
            return version(name)
        except PackageNotFoundError:
            return "?"

    from roma.models import scan

    fused = "mamba_inner_fn (fused path on)" if scan.mamba_ssm_kernels().mamba_inner_fn else "no mamba_inner_fn"
    return f"mamba-ssm {v('mamba-ssm')}, causal-conv1d {v('causal-conv1d')}: {fused}"
