"""Build mamba-ssm and causal-conv1d wheels on a GPU node, for that node's GPU architecture only.

Both packages ship only source distributions on PyPI (prebuilt wheels live on GitHub, and only
for torch <= 2.10), so a cluster with a newer torch, or without internet on its GPU nodes, has to
compile them with nvcc. Their setup.py files compile for every architecture from sm_75 to sm_121
(nine targets under CUDA 13); one architecture compiles in a few minutes instead of the better
part of an hour. Two steps:

    # 1. anywhere with internet (a login node), in the project's environment (torch installed):
    python slurm/build_cuda_wheels.py fetch --dest .whl/src
    # 2. on a GPU node (no internet needed), in the environment the jobs will use:
    python slurm/build_cuda_wheels.py build --src .whl/src --dest .whl --install
    python slurm/build_cuda_wheels.py build --src .whl/src --dry-run     # print the plan only

`build` detects the architecture (torch.cuda.get_device_capability(), else nvidia-smi; or
--arch 9.0), unpacks each sdist, removes the hard-coded -gencode list from its setup.py so that
torch's TORCH_CUDA_ARCH_LIST (set to that one architecture) decides, and runs
`pip wheel --no-index --no-deps --no-build-isolation` for both packages at once, with ninja and
MAX_JOBS = all cores. --install then installs the two wheels with --no-deps and checks that
roma's loader finds mamba_inner_fn. All dtypes stay compiled: selective_scan.cpp dispatches every
(input, weight) dtype pair at compile time, so dropping the fp16/complex sources leaves undefined
symbols at import; with one architecture the ten .cu files compile in parallel anyway.

Pinned versions (PINS below): mamba-ssm 2.3.2.post1 with causal-conv1d 1.7.0, for torch >= 2.9
(mamba-ssm 2.3.2 requires triton >= 3.5, which torch 2.9+ brings; its mamba_inner_fn calls
causal-conv1d's 7-argument causal_conv1d_fwd_function, which 1.7.0 has). Installed with
--no-deps: the models mamba-ssm also ships (Mamba2/3, its LM) want transformers, tilelang and
quack-kernels, which roma does not use; roma imports only the selective-scan interface.
"""
from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

PINS = {"mamba-ssm": "2.3.2.post1", "causal-conv1d": "1.7.0"}
# sdist file prefix, the package's own build switches: FORCE_BUILD skips the download of a
# prebuilt GitHub wheel (and needs no internet), SKIP_CUDA_BUILD makes `fetch` cheap
PACKAGES = {"causal-conv1d": ("causal_conv1d", "CAUSAL_CONV1D"), "mamba-ssm": ("mamba_ssm", "MAMBA")}
GENCODE_LINE = re.compile(r'^(?P<indent>\s*)cc_flag\.append\(\s*"(-gencode|arch=compute_\w+,code=\w+)"\s*\)\s*$',
                          re.MULTILINE)


def detect_arch(capability: tuple[int, int] | None = None) -> str:
    """'9.0' for an H100/H200: the given capability, else the visible GPU's (torch, then nvidia-smi)."""
    if capability is None:
        try:
            import torch

            if torch.cuda.is_available():
                capability = torch.cuda.get_device_capability(0)
        except ImportError:
            pass
    if capability is None and shutil.which("nvidia-smi"):
        out = subprocess.run(["nvidia-smi", "--query-gpu=compute_cap", "--format=csv,noheader"],
                             capture_output=True, text=True).stdout.split()
        if out:
            major, minor = out[0].split(".")
            capability = (int(major), int(minor))
    if capability is None:
        raise SystemExit("no GPU visible (torch.cuda and nvidia-smi): run on the GPU node, or pass --arch 9.0")
    return f"{capability[0]}.{capability[1]}"


def restrict_setup_to_torch_arch_list(text: str) -> str:
    """setup.py with its hard-coded `cc_flag.append("-gencode")` / `("arch=...")` lines removed.

    With no architecture flag of its own, torch's BuildExtension adds the ones of
    TORCH_CUDA_ARCH_LIST (or, when the package clears it, of the GPUs it sees).
    """
    new, n = GENCODE_LINE.subn(lambda m: f"{m.group('indent')}pass  # gencode removed by build_cuda_wheels.py", text)
    if n == 0 or "arch=compute" in new:
        raise SystemExit("setup.py no longer has the expected cc_flag.append(\"-gencode\") lines: cannot restrict "
                         "the architectures; pass --all-archs to build for all of them")
    return new


def find_sdist(src: Path, package: str) -> Path:
    prefix = PACKAGES[package][0]
    hits = sorted(src.glob(f"{prefix}-{PINS[package]}.tar.gz"))
    if not hits:
        raise SystemExit(f"{src}: no {prefix}-{PINS[package]}.tar.gz; fetch it first, on a machine with internet:\n"
                         f"  python slurm/build_cuda_wheels.py fetch --dest {src}")
    return hits[0]


def build_env(package: str, arch: str, jobs: int) -> dict[str, str]:
    flag = PACKAGES[package][1]
    return {"TORCH_CUDA_ARCH_LIST": arch, "MAX_JOBS": str(jobs), f"{flag}_FORCE_BUILD": "TRUE"}


def build_command(source_dir: Path, dest: Path) -> list[str]:
    return [sys.executable, "-m", "pip", "wheel", "--no-index", "--no-deps", "--no-build-isolation",
            "--wheel-dir", str(dest), str(source_dir)]


def install_command(wheels: list[Path]) -> list[str]:
    return [sys.executable, "-m", "pip", "install", "--no-index", "--no-deps", "--force-reinstall",
            *map(str, wheels)]


def unpack(sdist: Path, into: Path, all_archs: bool) -> Path:
    with tarfile.open(sdist) as tar:
        try:
            tar.extractall(into, filter="data")
        except TypeError:  # Python without extraction filters (< 3.10.12)
            tar.extractall(into)  # noqa: S202 - our own pinned download
    root = into / sdist.name[: -len(".tar.gz")]
    if not all_archs:
        setup = root / "setup.py"
        setup.write_text(restrict_setup_to_torch_arch_list(setup.read_text()))
    return root


def cmd_fetch(args) -> None:
    args.dest.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **{f"{flag}_{k}": "TRUE" for _, flag in PACKAGES.values() for k in ("SKIP_CUDA_BUILD", "FORCE_BUILD")}}
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--no-build-isolation",
           "--dest", str(args.dest), *(f"{p}=={v}" for p, v in PINS.items())]
    print("$ " + shlex.join(cmd), flush=True)
    if not args.dry_run:
        subprocess.run(cmd, env=env, check=True)


def cmd_build(args) -> list[Path]:
    arch = args.arch or detect_arch()
    jobs = args.jobs or os.cpu_count() or 1
    sdists = {p: find_sdist(args.src, p) for p in PACKAGES}
    print(f"building {', '.join(f'{p} {PINS[p]}' for p in PACKAGES)} for sm_{arch.replace('.', '')} only, "
          f"MAX_JOBS={jobs}, into {args.dest}", flush=True)
    if not args.dry_run and shutil.which("nvcc") is None and not os.environ.get("CUDA_HOME"):
        raise SystemExit("nvcc not found: load the CUDA toolkit (e.g. `module load cuda`) or set CUDA_HOME")
    try:
        import ninja  # noqa: F401 - without it torch compiles the .cu files one by one
    except ImportError:
        print("warning: ninja is not installed (pip install ninja): the build will be serial", flush=True)
    work = Path(tempfile.mkdtemp(prefix="roma-cuda-build-"))
    procs = []
    try:
        for package, sdist in sdists.items():
            env = build_env(package, arch, jobs)
            source = unpack(sdist, work, args.all_archs)  # also in a dry run: checks the setup.py patch
            cmd = build_command(source, args.dest)
            print(f"$ {' '.join(f'{k}={v}' for k, v in env.items())} {shlex.join(cmd)}", flush=True)
            if not args.dry_run:
                args.dest.mkdir(parents=True, exist_ok=True)
                log = open(work / f"{package}.log", "w")  # noqa: SIM115 - closed below
                procs.append((package, subprocess.Popen(cmd, env={**os.environ, **env}, stdout=log,
                                                        stderr=subprocess.STDOUT), log))
        failed = []
        for package, proc, log in procs:  # both packages compile at once: ninja keeps all cores busy
            proc.wait()
            log.close()
            if proc.returncode:
                failed.append(package)
                print(f"--- {package} build failed; the end of its log:\n" +
                      "".join((work / f"{package}.log").read_text().splitlines(True)[-40:]), flush=True)
        if failed:
            raise SystemExit(f"build failed: {', '.join(failed)}")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    wheels = [w for p in PACKAGES for w in sorted(args.dest.glob(f"{PACKAGES[p][0]}-{PINS[p]}-*.whl"))]
    if args.dry_run:
        wheels = [args.dest / f"{PACKAGES[p][0]}-{PINS[p]}-<tags>.whl" for p in PACKAGES]
    if args.install:
        cmd = install_command(wheels)
        print("$ " + shlex.join(cmd), flush=True)
        if not args.dry_run:
            subprocess.run(cmd, check=True)
            check = ("from roma.models.scan import mamba_ssm_kernels; k = mamba_ssm_kernels(); "
                     "assert k is not None and k.mamba_inner_fn is not None, 'mamba-ssm does not import'; "
                     "print('roma sees mamba_inner_fn: the fused path is on')")
            subprocess.run([sys.executable, "-c", check], check=True, cwd=Path(__file__).resolve().parents[1])
    return wheels


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    f = sub.add_parser("fetch", help="download the pinned source distributions (needs internet)")
    f.add_argument("--dest", type=Path, default=Path(".whl/src"))
    f.add_argument("--dry-run", action="store_true")
    b = sub.add_parser("build", help="compile wheels for this node's GPU (no internet needed)")
    b.add_argument("--src", type=Path, default=Path(".whl/src"), help="folder with the fetched .tar.gz files")
    b.add_argument("--dest", type=Path, default=Path(".whl"), help="folder for the built wheels")
    b.add_argument("--arch", default=None, help="compute capability, e.g. 9.0 (default: the visible GPU's)")
    b.add_argument("--jobs", type=int, default=0, help="parallel compile jobs (default: all cores)")
    b.add_argument("--install", action="store_true", help="pip install the wheels (--no-deps) and check the import")
    b.add_argument("--all-archs", action="store_true", help="keep the packages' own architecture list")
    b.add_argument("--keep", action="store_true", help="keep the build folder and logs")
    b.add_argument("--dry-run", action="store_true", help="print the plan and commands, build nothing")
    args = p.parse_args(argv)
    if args.command == "build" and args.arch and not re.fullmatch(r"\d+\.\d+a?", args.arch):
        p.error(f"--arch {args.arch!r}: expected a compute capability such as 9.0 or 8.6")
    (cmd_fetch if args.command == "fetch" else cmd_build)(args)


if __name__ == "__main__":
    main()
