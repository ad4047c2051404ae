"""Build mamba-ssm and causal-conv1d wheels on a GPU node, for that node's GPU architecture only.

Both packages ship only source distributions on PyPI (prebuilt wheels live on GitHub, and only
for torch <= 2.10), so a cluster with a newer torch, or without internet on its GPU nodes, has to
compile them with nvcc. Their setup.py files compile for every architecture from sm_75 to sm_121
(nine targets under CUDA 13); one architecture compiles in a fraction of the time.

Recommended (docs/cuda.md): cross-build on any machine with nvcc and internet but no GPU, for
the GPU nodes' Python, torch and architecture, and carry the wheels:

    python slurm/build_cuda_wheels.py fetch --dest .whl/src           # or pip download / curl the sdists
    python slurm/build_cuda_wheels.py build --arch 9.0 --python 3.12 --torch 2.11.0 \
        --work build/cuda/work --jobs 2 --sequential                  # venv build/cuda/venv, wheels in .whl/
    python slurm/build_cuda_wheels.py check                           # log: benchmarks/results/cuda_build/

--python/--torch make (once, reused) a build venv at --venv with that interpreter (a pyenv
version such as 3.12, or a path) and `torch==<version>` from PyPI (2.11.0 resolves to +cu130) plus
packaging, ninja, wheel, setuptools; the packages are then built with that venv's python. --work
keeps the unpacked, patched sources and their build/ folders, so an interrupted build resumes
where ninja stopped. On a GPU node (no internet needed), in the environment the jobs will use:

    python slurm/build_cuda_wheels.py build --src .whl/src --dest .whl --install
    python slurm/build_cuda_wheels.py build --src .whl/src --dry-run     # print the plan only

`build` takes the architecture from --arch (else torch.cuda.get_device_capability(), else
nvidia-smi), unpacks each sdist, removes the hard-coded -gencode list from its setup.py so that
torch's TORCH_CUDA_ARCH_LIST (set to that one architecture) decides, and runs
`pip wheel --no-index --no-deps --no-build-isolation` for both packages (at once, or one after the
other with --sequential), with ninja and MAX_JOBS = --jobs (default all cores). Each run appends
its wall times to <dest>/build_times.jsonl. --install then installs the two wheels with --no-deps
and checks that roma's loader finds mamba_inner_fn.

drop_unused_dtypes (default; --all-dtypes skips it): roma runs the selective scan with fp32 or bf16
inputs and real fp32 A only. The patch removes the five fp16-input and complex-weight kernel files
from mamba-ssm's setup.py, the complex instantiations from the two forward files it keeps, and
restricts the two dispatch macros of selective_scan.cpp (DISPATCH_ITYPE_FLOAT_AND_HALF_AND_BF16,
DISPATCH_WTYPE_FLOAT_AND_COMPLEX) to those dtypes, so nothing references a dropped kernel; fp16 or
complex inputs raise "... rebuild with --all-dtypes". Every pattern is checked before any file is
written; a source that differs stops the build naming the file and the pattern.

Pinned versions (PINS below): mamba-ssm 2.3.2.post1 with causal-conv1d 1.7.0, for torch >= 2.9
(mamba-ssm 2.3.2 requires triton >= 3.5, which torch 2.9+ brings; its mamba_inner_fn calls
causal-conv1d's 7-argument causal_conv1d_fwd_function, which 1.7.0 has). Installed with
--no-deps: the models mamba-ssm also ships (Mamba2/3, its LM) want transformers, tilelang and
quack-kernels, which roma does not use; roma imports only the selective-scan interface.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
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


# --- drop_unused_dtypes: roma runs the selective scan with fp32 or bf16 inputs and real fp32 A ---
# mamba-ssm compiles 9 kernel files (fp32/fp16/bf16 input x real/complex weight, fwd and bwd); the
# patch keeps the 4 that roma calls (fp32 and bf16 input, real weight) and makes the two dispatch
# macros in selective_scan.cpp refuse fp16 input and complex A with an error naming this flag,
# so the dropped kernels are never referenced (no undefined symbol at import).
DROPPED_SOURCES = ("selective_scan_fwd_fp16.cu", "selective_scan_bwd_fp32_complex.cu",
                   "selective_scan_bwd_fp16_real.cu", "selective_scan_bwd_fp16_complex.cu",
                   "selective_scan_bwd_bf16_complex.cu")
KEPT_SOURCES = ("selective_scan.cpp", "selective_scan_fwd_fp32.cu", "selective_scan_fwd_bf16.cu",
                "selective_scan_bwd_fp32_real.cu", "selective_scan_bwd_bf16_real.cu")
COMPLEX_FWD = {"selective_scan_fwd_fp32.cu": "float", "selective_scan_fwd_bf16.cu": "at::BFloat16"}
DROPPED_MSG = ("mamba-ssm was built by slurm/build_cuda_wheels.py without fp16 inputs and complex weights; "
               "rebuild with --all-dtypes")
ITYPE_MACRO = "DISPATCH_ITYPE_FLOAT_AND_HALF_AND_BF16"
WTYPE_MACRO = "DISPATCH_WTYPE_FLOAT_AND_COMPLEX"
NEW_ITYPE = f"""#define {ITYPE_MACRO}(ITYPE, NAME, ...)                    \\
    if (ITYPE == at::ScalarType::BFloat16) {{                                      \\
        using input_t = at::BFloat16;                                               \\
        __VA_ARGS__();                                                              \\
    }} else if (ITYPE == at::ScalarType::Float)  {{                                 \\
        using input_t = float;                                                      \\
        __VA_ARGS__();                                                              \\
    }} else {{                                                                      \\
        AT_ERROR(#NAME, " not implemented for input type '", toString(ITYPE), "': {DROPPED_MSG}"); \\
    }}
"""
NEW_WTYPE = f"""#define {WTYPE_MACRO}(WTYPE, NAME, ...)                           \\
    if (WTYPE == at::ScalarType::Float) {{                                          \\
        using weight_t = float;                                                     \\
        __VA_ARGS__();                                                              \\
    }} else {{                                                                      \\
        AT_ERROR(#NAME, " not implemented for weight type '", toString(WTYPE), "': {DROPPED_MSG}"); \\
    }}
"""


class PatchError(SystemExit):
    """The upstream source does not look as the patch expects: never build all silently."""


def _refuse(file: str, what: str) -> None:
    raise PatchError(f"drop_unused_dtypes: {file}: {what}; the mamba-ssm source is not the expected "
                     f"{'mamba_ssm-' + PINS['mamba-ssm']} layout. Pass --all-dtypes to build every dtype.")


def replace_macro(text: str, name: str, new: str, file: str = "selective_scan.cpp") -> str:
    """text with the multi-line `#define name(...)` (its continuation lines included) replaced by new."""
    lines = text.splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if line.startswith(f"#define {name}(")]
    if len(starts) != 1:
        _refuse(file, f"expected one '#define {name}(' line, found {len(starts)}")
    end = starts[0]
    while lines[end].rstrip("\r\n").endswith("\\"):
        end += 1
        if end == len(lines):
            _refuse(file, f"the macro {name} never ends")
    old = "".join(lines[starts[0]:end + 1])
    for needed in ("__VA_ARGS__", "AT_ERROR"):
        if needed not in old:
            _refuse(file, f"the macro {name} has no {needed}")
    return "".join(lines[:starts[0]]) + new + "".join(lines[end + 1:])


def drop_unused_dtypes_setup(text: str) -> str:
    """mamba-ssm's setup.py without the fp16 and complex selective-scan sources."""
    for name in DROPPED_SOURCES + KEPT_SOURCES:
        n = len(re.findall(rf'^\s*"csrc/selective_scan/{re.escape(name)}",\s*$', text, re.MULTILINE))
        if n != 1:
            _refuse("setup.py", f'expected the source line "csrc/selective_scan/{name}", once, found {n}')
    for name in DROPPED_SOURCES:
        text = re.sub(rf'^\s*"csrc/selective_scan/{re.escape(name)}",\s*\n', "", text, flags=re.MULTILINE)
    return text


def drop_complex_instantiation(text: str, file: str, input_t: str) -> str:
    line = re.compile(rf"^template void selective_scan_fwd_cuda<{re.escape(input_t)}, complex_t>\([^;\n]*\);[ \t]*(?:\n|\Z)",
                      re.MULTILINE)
    if len(line.findall(text)) != 1 or f"selective_scan_fwd_cuda<{input_t}, float>" not in text:
        _refuse(file, f"expected one selective_scan_fwd_cuda<{input_t}, complex_t> and one <{input_t}, float> "
                      "instantiation")
    return line.sub("", text)


def drop_unused_dtypes(root: Path) -> list[str]:
    """Patch an unpacked mamba-ssm source tree in place (checked in full before anything is written).

    Returns the patched files. Raises PatchError naming the file and pattern when the tree differs.
    """
    csrc = root / "csrc" / "selective_scan"
    for name in KEPT_SOURCES + DROPPED_SOURCES:
        if not (csrc / name).is_file():
            _refuse(f"csrc/selective_scan/{name}", "missing")
    new = {root / "setup.py": drop_unused_dtypes_setup((root / "setup.py").read_text())}
    cpp = (csrc / "selective_scan.cpp").read_text()
    for macro in (ITYPE_MACRO, WTYPE_MACRO):
        uses = len(re.findall(rf"\b{macro}\(\w+\.scalar_type\(\)", cpp))
        if uses != 2:  # forward and backward; a new call site could need a dropped dtype
            _refuse("selective_scan.cpp", f"expected {macro} used twice (fwd, bwd), found {uses}")
    cpp = replace_macro(cpp, ITYPE_MACRO, NEW_ITYPE)
    new[csrc / "selective_scan.cpp"] = replace_macro(cpp, WTYPE_MACRO, NEW_WTYPE)
    for name, input_t in COMPLEX_FWD.items():
        new[csrc / name] = drop_complex_instantiation((csrc / name).read_text(), name, input_t)
    for path, text in new.items():
        path.write_text(text)
    return [str(p.relative_to(root)) for p in new]


# --- cross-build: a venv with the GPU machine's Python and CUDA torch, on a machine without a GPU ---
def resolve_python(spec: str) -> Path:
    """An interpreter for --python: a path, a pyenv version (3.12 -> newest ~/.pyenv/versions/3.12.*), or pythonX.Y."""
    if os.sep in spec:
        return Path(spec)
    root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    major_minor = ".".join(spec.split(".")[:2])
    candidates = sorted((p for p in root.glob(f"{spec}*") if (p / "bin" / f"python{major_minor}").exists()
                         and re.fullmatch(rf"{re.escape(spec)}(\.\d+)?", p.name)),
                        key=lambda p: [int(x) for x in p.name.split(".")])
    if candidates:
        return candidates[-1] / "bin" / f"python{major_minor}"
    found = shutil.which(f"python{major_minor}")
    if found is None:
        raise SystemExit(f"--python {spec}: no such interpreter (pyenv versions under {root}, or python{major_minor})")
    return Path(found)


def venv_commands(python: Path, venv: Path, torch_version: str) -> list[list[str]]:
    """Create the build venv and install the CUDA torch plus the build tools (never mamba-ssm's runtime deps)."""
    return [[str(python), "-m", "venv", str(venv)],
            [str(venv / "bin" / "python"), "-m", "pip", "install", f"torch=={torch_version}",
             "packaging", "ninja", "wheel", "setuptools"]]


def venv_torch(venv: Path) -> str | None:
    """The torch version (e.g. '2.11.0+cu130') installed in venv, None when missing."""
    py = venv / "bin" / "python"
    if not py.exists():
        return None
    out = subprocess.run([str(py), "-c", "import torch; print(torch.__version__, torch.version.cuda)"],
                         capture_output=True, text=True)
    return out.stdout.split()[0] if out.returncode == 0 and out.stdout.split() else None


def ensure_venv(python_spec: str, venv: Path, torch_version: str, dry_run: bool) -> Path:
    have = venv_torch(venv)
    if have is not None and have.split("+")[0] == torch_version:
        print(f"build venv {venv}: torch {have} already there", flush=True)
        return venv / "bin" / "python"
    for cmd in venv_commands(resolve_python(python_spec), venv, torch_version):
        print("$ " + shlex.join(cmd), flush=True)
        if not dry_run:
            subprocess.run(cmd, check=True)
    return venv / "bin" / "python"


def find_sdist(src: Path, package: str) -> Path:
    prefix = PACKAGES[package][0]
    hits = sorted(src.glob(f"{prefix}-{PINS[package]}.tar.gz"))
    if not hits:
        raise SystemExit(f"{src}: no {prefix}-{PINS[package]}.tar.gz; fetch it first, on a machine with internet:\n"
                         f"  python slurm/build_cuda_wheels.py fetch --dest {src}")
    return hits[0]


def cuda_home(nvcc: str | None = None, env: dict[str, str] | None = None) -> str | None:
    """The CUDA toolkit root: CUDA_HOME/CUDA_PATH if set, else the folder above the real nvcc's bin/.

    torch guesses it from `which nvcc`; when that is a wrapper script (/usr/local/bin/nvcc here)
    the guess (/usr/local) has no include/cuda_runtime_api.h and the .cpp files fail to compile.
    """
    env = os.environ if env is None else env
    for key in ("CUDA_HOME", "CUDA_PATH"):
        if env.get(key):
            return env[key]
    nvcc = nvcc or shutil.which("nvcc")
    candidates = [Path(nvcc).parent.parent, Path(os.path.realpath(nvcc)).parent.parent] if nvcc else []
    candidates.append(Path("/usr/local/cuda"))
    for root in candidates:
        if (root / "include" / "cuda_runtime_api.h").exists() and (root / "bin" / "nvcc").exists():
            return str(root)
    return None


def build_env(package: str, arch: str, jobs: int) -> dict[str, str]:
    flag = PACKAGES[package][1]
    env = {"TORCH_CUDA_ARCH_LIST": arch, "MAX_JOBS": str(jobs), f"{flag}_FORCE_BUILD": "TRUE"}
    home = cuda_home()
    if home:
        env["CUDA_HOME"] = home
    return env


def build_command(source_dir: Path, dest: Path, python: Path | str = sys.executable) -> list[str]:
    return [str(python), "-m", "pip", "wheel", "-v", "--no-index", "--no-deps", "--no-build-isolation",
            "--wheel-dir", str(dest), str(source_dir)]


def install_command(wheels: list[Path]) -> list[str]:
    return [sys.executable, "-m", "pip", "install", "--no-index", "--no-deps", "--force-reinstall",
            *map(str, wheels)]


def unpack(sdist: Path, into: Path, all_archs: bool, all_dtypes: bool = True) -> Path:
    """Unpack and patch sdist under into; an already patched tree (a kept --work) is reused as is,
    so its build/ folder lets ninja skip what was compiled before."""
    root = into / sdist.name[: -len(".tar.gz")]
    stamp = root / ".roma-patched"
    want = f"all_archs={all_archs} all_dtypes={all_dtypes}"
    if stamp.exists() and stamp.read_text() == want:
        return root
    if root.exists():
        shutil.rmtree(root)
    with tarfile.open(sdist) as tar:
        try:
            tar.extractall(into, filter="data")
        except TypeError:  # Python without extraction filters (< 3.10.12)
            tar.extractall(into)  # noqa: S202 - our own pinned download
    if not all_archs:
        setup = root / "setup.py"
        setup.write_text(restrict_setup_to_torch_arch_list(setup.read_text()))
    if not all_dtypes and root.name.startswith(PACKAGES["mamba-ssm"][0] + "-"):
        print(f"drop_unused_dtypes: patched {', '.join(drop_unused_dtypes(root))}", flush=True)
    stamp.write_text(want)
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
    cross = args.python is not None or args.torch is not None
    if cross and not (args.python and args.torch and args.arch):
        raise SystemExit("a cross-build needs all of --arch, --python and --torch (e.g. --arch 9.0 --python 3.12 "
                         "--torch 2.11.0): there is no GPU to detect them from")
    arch = args.arch or detect_arch()
    jobs = args.jobs or os.cpu_count() or 1
    python: Path | str = sys.executable
    if cross:
        python = ensure_venv(args.python, args.venv, args.torch, args.dry_run)
        missing = [p for p in PACKAGES if not (args.src / f"{PACKAGES[p][0]}-{PINS[p]}.tar.gz").exists()]
        if missing:  # a cross-build machine has internet: fetch with the venv's torch (metadata needs it)
            cmd = [str(python), str(Path(__file__).resolve()), "fetch", "--dest", str(args.src)]
            print("$ " + shlex.join(cmd), flush=True)
            if args.dry_run:
                return []
            subprocess.run(cmd, check=True)
    sdists = {p: find_sdist(args.src, p) for p in PACKAGES}
    print(f"building {', '.join(f'{p} {PINS[p]}' for p in PACKAGES)} for sm_{arch.replace('.', '')} only, "
          f"MAX_JOBS={jobs}, {'fp32/bf16 real scans only' if not args.all_dtypes else 'all dtypes'}, "
          f"with {python}, into {args.dest}", flush=True)
    if not args.dry_run and shutil.which("nvcc") is None and not os.environ.get("CUDA_HOME"):
        raise SystemExit("nvcc not found: load the CUDA toolkit (e.g. `module load cuda`) or set CUDA_HOME")
    if not cross:
        try:
            import ninja  # noqa: F401 - without it torch compiles the .cu files one by one
        except ImportError:
            print("warning: ninja is not installed (pip install ninja): the build will be serial", flush=True)
    keep = args.keep or args.work is not None
    work = args.work if args.work is not None else Path(tempfile.mkdtemp(prefix="roma-cuda-build-"))
    work.mkdir(parents=True, exist_ok=True)
    procs, times = [], {}
    try:
        for package, sdist in sdists.items():
            env = build_env(package, arch, jobs)
            source = unpack(sdist, work, args.all_archs, args.all_dtypes)  # also in a dry run: checks the patch
            cmd = build_command(source, args.dest, python)
            print(f"$ {' '.join(f'{k}={v}' for k, v in env.items())} {shlex.join(cmd)}", flush=True)
            if not args.dry_run:
                args.dest.mkdir(parents=True, exist_ok=True)
                log = open(work / f"{package}.log", "a")  # noqa: SIM115 - closed below
                t0 = time.time()
                proc = subprocess.Popen(cmd, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT)
                procs.append((package, proc, log, t0))
                if args.sequential:  # one package at a time: MAX_JOBS is then the whole load
                    proc.wait()
                    times[package] = time.time() - t0
        failed = []
        for package, proc, log, t0 in procs:  # in parallel: both packages compile at once
            proc.wait()
            times.setdefault(package, time.time() - t0)
            log.close()
            if proc.returncode:
                failed.append(package)
                print(f"--- {package} build failed; the end of its log:\n" +
                      "".join((work / f"{package}.log").read_text().splitlines(True)[-40:]), flush=True)
        if times:
            record = {"arch": arch, "jobs": jobs, "sequential": args.sequential, "all_dtypes": args.all_dtypes,
                      "python": str(python), "torch": venv_torch(args.venv) if cross else None,
                      "nice": os.nice(0), "loadavg_end": os.getloadavg(), "finished_utc": time.time(),
                      "wall_s": {p: round(t, 1) for p, t in times.items()}, "failed": failed}
            with open(args.dest / "build_times.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")
            print(f"wall time per package (s): {record['wall_s']}", flush=True)
        if failed:
            raise SystemExit(f"build failed: {', '.join(failed)}")
    finally:
        if not keep:
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


CARRY_LIMIT = 64 * 2**20  # the GPU call's working tree + carried paths
CHECK_DEPS = ("einops", "numpy")  # roma.models imports them; the build venv has torch only
KEPT_SYMBOLS = ("selective_scan_fwd_cuda<float, float>", "selective_scan_fwd_cuda<c10::BFloat16, float>",
                "selective_scan_bwd_cuda<float, float>", "selective_scan_bwd_cuda<c10::BFloat16, float>")
IMPORT_CHECK = """
import time; t0 = time.time()
import torch
import selective_scan_cuda, causal_conv1d_cuda
print('torch', torch.__version__, 'cuda available:', torch.cuda.is_available())
print('import selective_scan_cuda:', selective_scan_cuda.__file__)
print('import causal_conv1d_cuda:', causal_conv1d_cuda.__file__)
from roma.models import fused, scan
k = scan.mamba_ssm_kernels()
assert k is not None, 'roma.models.scan.mamba_ssm_kernels() is None: mamba-ssm does not import'
assert k.mamba_inner_fn is not None, 'no mamba_inner_fn'
print('roma.models.fused sees mamba_inner_fn:', k.mamba_inner_fn.__module__ + '.' + k.mamba_inner_fn.__qualname__)
print('selective_scan_fn:', k.selective_scan_fn.__module__, ' causal_conv1d_fn:', k.causal_conv1d_fn.__module__)
print(f'imports took {time.time() - t0:.1f} s')
"""


def _run(cmd: list[str], **kw) -> tuple[int, str]:
    res = subprocess.run(cmd, capture_output=True, text=True, **kw)
    return res.returncode, (res.stdout + res.stderr).strip()


def shipped_bytes(repo: Path, carried: list[Path]) -> tuple[int, int]:
    """(bytes of the working tree the device call copies: tracked + untracked not ignored, bytes of carried)."""
    out = subprocess.run(["git", "-C", str(repo), "ls-files", "-z", "-co", "--exclude-standard"],
                         capture_output=True, check=True).stdout.decode().split("\0")
    tree = sum((repo / f).lstat().st_size for f in out if f and (repo / f).is_file() and not (repo / f).is_symlink())
    carry = sum(f.lstat().st_size for c in carried for f in ([c] if c.is_file() else c.rglob("*")) if f.is_file())
    return tree, carry


def find_cuobjdump(venv: Path | None = None) -> str | None:
    """cuobjdump from PATH, the CUDA toolkit, or (a toolkit without it, as here) triton's copy in venv."""
    home = cuda_home()
    for cand in [shutil.which("cuobjdump"), home and str(Path(home) / "bin" / "cuobjdump"),
                 *(sorted(map(str, venv.glob("lib/python*/site-packages/triton/backends/nvidia/bin/cuobjdump")))
                   if venv else [])]:
        if cand and Path(cand).is_file() and os.access(cand, os.X_OK):
            return cand
    return None


def cmd_check(args) -> int:
    """The CPU-side evidence for cross-built wheels, as a log: build times, sizes, the 64 MiB fit,
    the architectures in each extension, the kept kernels, and the imports in the build venv."""
    repo = Path(__file__).resolve().parents[1]
    wheels = [w for p in PACKAGES for w in sorted(args.dest.glob(f"{PACKAGES[p][0]}-{PINS[p]}-*.whl"))[-1:]]
    lines, failures = [], []
    say = lambda s="": (lines.append(s), print(s, flush=True))
    say(f"# cross-built CUDA wheels, checked on {os.uname().nodename} (no GPU) {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")
    say(f"$ python slurm/build_cuda_wheels.py check --dest {args.dest} --venv {args.venv}")
    if len(wheels) != len(PACKAGES):
        raise SystemExit(f"{args.dest}: expected one wheel per package ({', '.join(PACKAGES)}), found "
                         f"{[w.name for w in wheels]}; build them first")
    say("\n## build (build_times.jsonl, one line per build run)")
    times = args.dest / "build_times.jsonl"
    for line in (times.read_text().splitlines() if times.exists() else ["(none recorded)"]):
        say(line)
    say("\n## wheels")
    for w in wheels:
        say(f"{w.name}: {w.stat().st_size:,} bytes ({w.stat().st_size / 2**20:.2f} MiB)")
    tree, carry = shipped_bytes(repo, [args.dest])
    total = tree + carry
    say(f"project working tree (git ls-files -co --exclude-standard): {tree:,} bytes; carried {args.dest}/ (all of it): "
        f"{carry:,} bytes; total {total:,} bytes = {total / 2**20:.2f} MiB of the {CARRY_LIMIT / 2**20:.0f} MiB limit: "
        f"{'fits' if total <= CARRY_LIMIT else 'DOES NOT FIT'}")
    if total > CARRY_LIMIT:
        failures.append("64 MiB")
    cuobjdump = find_cuobjdump(args.venv)
    if cuobjdump is None:
        raise SystemExit("no cuobjdump: not on PATH, in $CUDA_HOME/bin, nor in the build venv's triton")
    with tempfile.TemporaryDirectory(prefix="roma-wheel-check-") as tmp:
        site = Path(tmp) / "site"
        _, ver = _run([cuobjdump, "--version"])
        say(f"\n## architectures in each extension (cuobjdump --list-elf / --list-ptx)\ncuobjdump: {cuobjdump} "
            f"({ver.splitlines()[-1] if ver else '?'})")
        import zipfile

        for w in wheels:
            with zipfile.ZipFile(w) as z:
                for so in (n for n in z.namelist() if n.endswith(".so")):
                    path = Path(z.extract(so, Path(tmp) / "so"))
                    rc, elf = _run([cuobjdump, "--list-elf", str(path)])
                    _, ptx = _run([cuobjdump, "--list-ptx", str(path)])
                    arches = sorted(set(re.findall(r"\.(sm_\d+a?)\.cubin", elf)))
                    say(f"$ cuobjdump --list-elf {so}   ({path.stat().st_size:,} bytes)")
                    say(elf or f"(rc {rc}, no output)")
                    say(f"$ cuobjdump --list-ptx {so}")
                    say(ptx or "(no PTX)")
                    say(f"-> {so}: SASS for {', '.join(arches) or 'nothing'}")
                    if arches != [f"sm_{args.arch.replace('.', '')}"]:
                        failures.append(f"{so} arches {arches}")
                    if so.startswith("selective_scan_cuda"):
                        _, syms = _run(["nm", "-DC", "--defined-only", str(path)])
                        say("kernel instantiations exported (nm -DC --defined-only):")
                        inst = sorted(set(re.findall(r"selective_scan_(?:fwd|bwd)_cuda<[^>]*>", syms)))
                        for sym in inst:
                            say(f"  {sym}")
                        missing = [k for k in KEPT_SYMBOLS if k not in inst]
                        extra = [k for k in inst if "Half" in k or "complex" in k]
                        if missing:
                            failures.append(f"missing {missing}")
                        say(f"-> fp32/bf16 real kept: {'yes' if not missing else 'NO ' + str(missing)}; "
                            f"fp16/complex: {'dropped' if not extra else 'present (--all-dtypes build)'}")
        say("\n## imports in the build venv (no GPU)")
        py = Path(os.path.abspath(args.venv)) / "bin" / "python"
        rc, _ = _run([str(py), "-c", "import " + ", ".join(CHECK_DEPS)])
        if rc:
            cmd = [str(py), "-m", "pip", "install", *CHECK_DEPS]
            say(f"$ {shlex.join(cmd)}")
            rc, out = _run(cmd)
            say(out.splitlines()[-1] if out else "")
        cmd = [str(py), "-m", "pip", "install", "--no-index", "--no-deps", "--target", str(site), *map(str, wheels)]
        say(f"$ {shlex.join(cmd).replace(tmp, '<tmp>')}")
        rc, out = _run(cmd)
        say(out.splitlines()[-1].replace(tmp, "<tmp>") if out else f"rc {rc}")
        if rc:
            failures.append("pip install --target")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(repo)])}
        say(f"$ PYTHONPATH=<tmp>/site:<repo> {py} -c '<import torch, selective_scan_cuda, causal_conv1d_cuda; "
            "roma.models.scan.mamba_ssm_kernels().mamba_inner_fn>'")
        rc, out = _run([str(py), "-c", IMPORT_CHECK], env=env, cwd=tmp)
        say(out.replace(tmp, "<tmp>"))
        if rc:
            failures.append("imports")
    say(f"\nresult: {'OK' if not failures else 'FAILED: ' + '; '.join(failures)}")
    args.log.parent.mkdir(parents=True, exist_ok=True)
    args.log.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.log}")
    return 1 if failures else 0


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
    b.add_argument("--all-dtypes", action="store_true",
                   help="skip drop_unused_dtypes: also compile fp16-input and complex-weight scans")
    b.add_argument("--python", default=None, help="cross-build: the GPU machine's Python, e.g. 3.12 (pyenv) or a path")
    b.add_argument("--torch", default=None, help="cross-build: the GPU machine's torch, e.g. 2.11.0 (its CUDA build)")
    b.add_argument("--venv", type=Path, default=Path("build/cuda/venv"),
                   help="cross-build: the build venv, reused (not under .whl: that folder travels to the GPU)")
    b.add_argument("--work", type=Path, default=None,
                   help="build folder, kept: a rerun reuses its compiled objects (default: a temporary one)")
    b.add_argument("--sequential", action="store_true", help="build one package after the other")
    b.add_argument("--dry-run", action="store_true", help="print the plan and commands, build nothing")
    c = sub.add_parser("check", help="on the build machine: the log of cross-built wheels (no GPU needed)")
    c.add_argument("--dest", type=Path, default=Path(".whl"), help="folder with the built wheels")
    c.add_argument("--venv", type=Path, default=Path("build/cuda/venv"), help="the build venv")
    c.add_argument("--arch", default="9.0", help="the one architecture the extensions must hold")
    c.add_argument("--log", type=Path, default=Path("benchmarks/results/cuda_build/cross_build.log"))
    args = p.parse_args(argv)
    if args.command == "check":
        raise SystemExit(cmd_check(args))
    if args.command == "build" and args.arch and not re.fullmatch(r"\d+\.\d+a?", args.arch):
        p.error(f"--arch {args.arch!r}: expected a compute capability such as 9.0 or 8.6")
    (cmd_fetch if args.command == "fetch" else cmd_build)(args)


if __name__ == "__main__":
    main()
