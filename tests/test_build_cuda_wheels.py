"""slurm/build_cuda_wheels.py without a GPU: architecture detection, the setup.py patch, the plan."""
import importlib.util
import io
import re
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

spec = importlib.util.spec_from_file_location("build_cuda_wheels", REPO / "slurm" / "build_cuda_wheels.py")
bcw = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bcw)

# the shape of both packages' setup.py around their architecture list (abridged)
SETUP = '''
import os
cc_flag = []
if not SKIP_CUDA_BUILD:
    if bare_metal_version.major != torch_cuda_version.major:
        os.environ["TORCH_CUDA_ARCH_LIST"] = ""
    cc_flag.append("-gencode")
    cc_flag.append("arch=compute_75,code=sm_75")
    if bare_metal_version >= Version("11.8"):
        cc_flag.append("-gencode")
        cc_flag.append("arch=compute_90,code=sm_90")
    if bare_metal_version >= Version("13.0"):
        cc_flag.append("-gencode")
        cc_flag.append("arch=compute_110,code=sm_110")
    extra = {"nvcc": ["-O3", "--use_fast_math"] + cc_flag}
'''


def test_arch_from_an_injected_capability():
    assert bcw.detect_arch((9, 0)) == "9.0"
    assert bcw.detect_arch((8, 6)) == "8.6"


def test_setup_patch_removes_every_gencode_and_stays_valid_python():
    patched = bcw.restrict_setup_to_torch_arch_list(SETUP)
    assert "gencode" not in patched.replace("gencode removed", "") and "arch=compute" not in patched
    compile(patched, "setup.py", "exec")  # the emptied if-blocks keep a statement
    ns = {"SKIP_CUDA_BUILD": False, "os": __import__("os"), "Version": lambda v: tuple(map(int, v.split("."))),
          "bare_metal_version": type("V", (), {"major": 13, "__ge__": lambda s, o: True})(),
          "torch_cuda_version": type("V", (), {"major": 13})()}
    exec(patched.replace("import os\n", ""), ns)  # noqa: S102 - our own fixture text
    assert ns["extra"]["nvcc"] == ["-O3", "--use_fast_math"]  # torch's TORCH_CUDA_ARCH_LIST decides


def test_setup_patch_refuses_an_unknown_layout():
    with pytest.raises(SystemExit, match="all-archs"):
        bcw.restrict_setup_to_torch_arch_list("ext = CUDAExtension(extra_compile_args=['-arch=sm_80'])\n")
    with pytest.raises(SystemExit, match="all-archs"):  # a gencode written another way would survive
        bcw.restrict_setup_to_torch_arch_list(SETUP + 'cc_flag += ["-gencode", "arch=compute_80,code=sm_80"]\n')


def test_dry_run_prints_an_offline_single_arch_parallel_build(tmp_path, capsys):
    _cross_sdists(tmp_path)  # below: mamba-ssm shaped for drop_unused_dtypes
    bcw.main(["build", "--src", str(tmp_path), "--dest", str(tmp_path / "wheels"), "--arch", "9.0",
              "--jobs", "16", "--install", "--dry-run"])
    out = capsys.readouterr().out
    assert "sm_90 only" in out
    builds = [line for line in out.splitlines() if " pip wheel " in line]
    assert len(builds) == 2 and all("TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=16" in b for b in builds)
    assert all("--no-index --no-deps --no-build-isolation" in b for b in builds)
    assert "MAMBA_FORCE_BUILD=TRUE" in out and "CAUSAL_CONV1D_FORCE_BUILD=TRUE" in out
    assert "install --no-index --no-deps" in out
    assert not (tmp_path / "wheels").exists()  # nothing built


def test_build_without_sdists_says_how_to_fetch(tmp_path):
    with pytest.raises(SystemExit, match="fetch --dest"):
        bcw.main(["build", "--src", str(tmp_path), "--arch", "9.0", "--dry-run"])


def test_bad_arch_is_rejected(tmp_path, capsys):
    with pytest.raises(SystemExit):
        bcw.main(["build", "--src", str(tmp_path), "--arch", "sm90", "--dry-run"])
    assert "compute capability" in capsys.readouterr().err


def test_fetch_dry_run_downloads_the_pinned_sdists(tmp_path, capsys):
    bcw.main(["fetch", "--dest", str(tmp_path), "--dry-run"])
    out = capsys.readouterr().out
    assert "download --no-deps --no-binary :all:" in out
    assert f"mamba-ssm=={bcw.PINS['mamba-ssm']}" in out and f"causal-conv1d=={bcw.PINS['causal-conv1d']}" in out


# ----------------------------------------------------------------------------- drop_unused_dtypes
# a small tree shaped like mamba_ssm-2.3.2.post1's (the lines the patch reads, verbatim)
MAMBA_SETUP = '''
    ext_modules.append(
        CUDAExtension(
            name="selective_scan_cuda",
            sources=[
                "csrc/selective_scan/selective_scan.cpp",
                "csrc/selective_scan/selective_scan_fwd_fp32.cu",
                "csrc/selective_scan/selective_scan_fwd_fp16.cu",
                "csrc/selective_scan/selective_scan_fwd_bf16.cu",
                "csrc/selective_scan/selective_scan_bwd_fp32_real.cu",
                "csrc/selective_scan/selective_scan_bwd_fp32_complex.cu",
                "csrc/selective_scan/selective_scan_bwd_fp16_real.cu",
                "csrc/selective_scan/selective_scan_bwd_fp16_complex.cu",
                "csrc/selective_scan/selective_scan_bwd_bf16_real.cu",
                "csrc/selective_scan/selective_scan_bwd_bf16_complex.cu",
            ],
        )
    )
'''
CPP = r'''#include "selective_scan.h"

#define DISPATCH_ITYPE_FLOAT_AND_HALF_AND_BF16(ITYPE, NAME, ...)                    \
    if (ITYPE == at::ScalarType::Half) {                                            \
        using input_t = at::Half;                                                   \
        __VA_ARGS__();                                                              \
    } else if (ITYPE == at::ScalarType::BFloat16) {                                 \
        using input_t = at::BFloat16;                                               \
        __VA_ARGS__();                                                              \
    } else if (ITYPE == at::ScalarType::Float)  {                                   \
        using input_t = float;                                                      \
        __VA_ARGS__();                                                              \
    } else {                                                                        \
        AT_ERROR(#NAME, " not implemented for input type '", toString(ITYPE), "'"); \
    }

#define DISPATCH_WTYPE_FLOAT_AND_COMPLEX(WTYPE, NAME, ...)                           \
    if (WTYPE == at::ScalarType::Float) {                                            \
       using weight_t = float;                                                       \
        __VA_ARGS__();                                                               \
    } else if (WTYPE == at::ScalarType::ComplexFloat) {                              \
        using weight_t = c10::complex<float>;                                        \
        __VA_ARGS__();                                                               \
    } else {                                                                         \
        AT_ERROR(#NAME, " not implemented for weight type '", toString(WTYPE), "'"); \
    }

void fwd() {
    DISPATCH_ITYPE_FLOAT_AND_HALF_AND_BF16(u.scalar_type(), "selective_scan_fwd", [&] {
        DISPATCH_WTYPE_FLOAT_AND_COMPLEX(A.scalar_type(), "selective_scan_fwd", [&] {
            selective_scan_fwd_cuda<input_t, weight_t>(params, stream);
        });
    });
}
void bwd() {
    DISPATCH_ITYPE_FLOAT_AND_HALF_AND_BF16(u.scalar_type(), "selective_scan_bwd", [&] {
        DISPATCH_WTYPE_FLOAT_AND_COMPLEX(A.scalar_type(), "selective_scan_bwd", [&] {
            selective_scan_bwd_cuda<input_t, weight_t>(params, stream);
        });
    });
}
'''


def _fwd_cu(input_t):  # upstream's files end without a newline
    return (f'#include "selective_scan_fwd_kernel.cuh"\n'
            f"template void selective_scan_fwd_cuda<{input_t}, float>(SSMParamsBase &params, cudaStream_t stream);\n"
            f"template void selective_scan_fwd_cuda<{input_t}, complex_t>(SSMParamsBase &params, cudaStream_t stream);")


def _mamba_tree(root):
    csrc = root / "csrc" / "selective_scan"
    csrc.mkdir(parents=True)
    (root / "setup.py").write_text(MAMBA_SETUP)
    (csrc / "selective_scan.cpp").write_text(CPP)
    for name in bcw.KEPT_SOURCES[1:] + bcw.DROPPED_SOURCES:
        (csrc / name).write_text("// kernel instantiation\n")
    (csrc / "selective_scan_fwd_fp32.cu").write_text(_fwd_cu("float"))
    (csrc / "selective_scan_fwd_bf16.cu").write_text(_fwd_cu("at::BFloat16"))
    return root


def _snapshot(root):
    return {p: p.read_text() for p in root.rglob("*") if p.is_file()}


def test_drop_unused_dtypes_keeps_fp32_and_bf16_real_only(tmp_path):
    root = _mamba_tree(tmp_path / "mamba_ssm-2.3.2.post1")
    patched = bcw.drop_unused_dtypes(root)
    assert set(patched) == {"setup.py", "csrc/selective_scan/selective_scan.cpp",
                            "csrc/selective_scan/selective_scan_fwd_fp32.cu", "csrc/selective_scan/selective_scan_fwd_bf16.cu"}
    setup = (root / "setup.py").read_text()
    assert all(name not in setup for name in bcw.DROPPED_SOURCES)
    assert all(f'"csrc/selective_scan/{name}",' in setup for name in bcw.KEPT_SOURCES)
    cpp = (root / "csrc/selective_scan/selective_scan.cpp").read_text()
    assert "at::Half" not in cpp and "ComplexFloat" not in cpp and "complex<float>" not in cpp
    assert "using input_t = at::BFloat16;" in cpp and "using input_t = float;" in cpp
    assert "using weight_t = float;" in cpp and cpp.count("rebuild with --all-dtypes") == 2
    assert cpp.count("selective_scan_fwd_cuda<input_t, weight_t>") == 1  # the call sites are untouched
    # each macro is still one well-formed #define: every line but the last continues
    for macro in (bcw.ITYPE_MACRO, bcw.WTYPE_MACRO):
        lines = cpp[cpp.index(f"#define {macro}("):].splitlines()
        end = next(i for i, line in enumerate(lines) if not line.endswith("\\"))
        assert lines[end].strip() == "}" and all(line.endswith("\\") for line in lines[:end])
    for name, input_t in bcw.COMPLEX_FWD.items():
        cu = (root / "csrc/selective_scan" / name).read_text()
        assert "complex_t" not in cu and f"selective_scan_fwd_cuda<{input_t}, float>" in cu


@pytest.mark.parametrize("break_it, named", [
    (lambda r: (r / "csrc/selective_scan/selective_scan_fwd_fp16.cu").unlink(), "selective_scan_fwd_fp16.cu"),
    (lambda r: (r / "setup.py").write_text(MAMBA_SETUP.replace('"csrc/selective_scan/selective_scan_bwd_fp16_real.cu",\n', "")),
     "setup.py"),
    (lambda r: (r / "csrc/selective_scan/selective_scan.cpp").write_text(
        CPP.replace("DISPATCH_WTYPE_FLOAT_AND_COMPLEX", "DISPATCH_WTYPE_FLOAT_AND_COMPLEX64")), "selective_scan.cpp"),
    (lambda r: (r / "csrc/selective_scan/selective_scan.cpp").write_text(  # a third call site
        CPP + 'void more() { DISPATCH_ITYPE_FLOAT_AND_HALF_AND_BF16(x.scalar_type(), "other", [&] {}); }\n'),
     "selective_scan.cpp"),
    (lambda r: (r / "csrc/selective_scan/selective_scan_fwd_bf16.cu").write_text(_fwd_cu("at::Half")),
     "selective_scan_fwd_bf16.cu"),
])
def test_drop_unused_dtypes_refuses_an_unexpected_source_and_writes_nothing(tmp_path, break_it, named):
    root = _mamba_tree(tmp_path / "mamba_ssm-2.3.2.post1")
    break_it(root)
    before = _snapshot(root)
    with pytest.raises(SystemExit, match=rf"{re.escape(named)}.*--all-dtypes"):
        bcw.drop_unused_dtypes(root)
    assert _snapshot(root) == before  # all checks pass before any file is written


def _cross_sdists(folder):
    """sdists whose mamba-ssm part is the dtype fixture above (and both with the gencode setup)."""
    for package, (prefix, _) in bcw.PACKAGES.items():
        root = f"{prefix}-{bcw.PINS[package]}"
        tree = tmp = folder / "t" / root
        if package == "mamba-ssm":
            _mamba_tree(tree)
            (tree / "setup.py").write_text(SETUP + MAMBA_SETUP)
        else:
            tmp.mkdir(parents=True)
            (tree / "setup.py").write_text(SETUP)
        with tarfile.open(folder / f"{root}.tar.gz", "w:gz") as tar:
            tar.add(tree, arcname=root)


def test_cross_build_needs_arch_python_and_torch(tmp_path):
    _cross_sdists(tmp_path)
    with pytest.raises(SystemExit, match="--arch, --python and --torch"):
        bcw.main(["build", "--src", str(tmp_path), "--python", "3.12", "--torch", "2.11.0", "--dry-run"])
    with pytest.raises(SystemExit, match="--arch, --python and --torch"):
        bcw.main(["build", "--src", str(tmp_path), "--arch", "9.0", "--python", "3.12", "--dry-run"])


def test_resolve_python_prefers_the_newest_matching_pyenv_version(tmp_path, monkeypatch):
    for v in ("3.12.1", "3.12.10", "3.11.7", "3.120.0"):
        exe = tmp_path / "versions" / v / "bin" / f"python{'.'.join(v.split('.')[:2])}"
        exe.parent.mkdir(parents=True)
        exe.write_text("")
    monkeypatch.setenv("PYENV_ROOT", str(tmp_path))
    assert bcw.resolve_python("3.12") == tmp_path / "versions/3.12.10/bin/python3.12"
    assert bcw.resolve_python("3.12.1") == tmp_path / "versions/3.12.1/bin/python3.12"
    assert bcw.resolve_python("/opt/py/bin/python3") == Path("/opt/py/bin/python3")


def test_cross_build_dry_run_plans_venv_and_builds_with_its_python(tmp_path, capsys, monkeypatch):
    _cross_sdists(tmp_path)
    exe = tmp_path / "pyenv" / "versions" / "3.12.1" / "bin" / "python3.12"
    exe.parent.mkdir(parents=True)
    exe.write_text("")
    monkeypatch.setenv("PYENV_ROOT", str(tmp_path / "pyenv"))
    venv, work = tmp_path / "venv", tmp_path / "work"
    bcw.main(["build", "--src", str(tmp_path), "--dest", str(tmp_path / "wheels"), "--arch", "9.0",
              "--python", "3.12", "--torch", "2.11.0", "--venv", str(venv), "--work", str(work),
              "--jobs", "2", "--sequential", "--dry-run"])
    out = capsys.readouterr().out
    assert f"$ {exe} -m venv {venv}" in out
    assert f"{venv}/bin/python -m pip install torch==2.11.0 packaging ninja wheel setuptools" in out
    builds = [line for line in out.splitlines() if " pip wheel " in line]
    assert len(builds) == 2 and all(f"{venv}/bin/python -m pip wheel -v --no-index --no-deps --no-build-isolation" in b
                                    and "TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=2" in b for b in builds)
    assert "fp32/bf16 real scans only" in out and "drop_unused_dtypes: patched" in out
    assert not venv.exists() and not (tmp_path / "wheels").exists()  # nothing created, nothing built
    cpp = (work / f"mamba_ssm-{bcw.PINS['mamba-ssm']}" / "csrc/selective_scan/selective_scan.cpp").read_text()
    assert "at::Half" not in cpp  # the kept work tree is patched
    marker = work / f"mamba_ssm-{bcw.PINS['mamba-ssm']}" / "build" / "kept.o"
    marker.parent.mkdir()
    marker.write_text("")
    bcw.main(["build", "--src", str(tmp_path), "--arch", "9.0", "--python", "3.12", "--torch", "2.11.0",
              "--venv", str(venv), "--work", str(work), "--dry-run"])
    assert marker.exists()  # a rerun reuses the tree and its compiled objects
    assert "drop_unused_dtypes: patched" not in capsys.readouterr().out
    bcw.main(["build", "--src", str(tmp_path), "--arch", "9.0", "--python", "3.12", "--torch", "2.11.0",
              "--venv", str(venv), "--work", str(work), "--all-dtypes", "--dry-run"])
    assert "all dtypes" in capsys.readouterr().out and not marker.exists()  # other options: unpacked afresh
    assert "at::Half" in (work / f"mamba_ssm-{bcw.PINS['mamba-ssm']}" / "csrc/selective_scan/selective_scan.cpp").read_text()


def test_check_needs_the_built_wheels(tmp_path):
    with pytest.raises(SystemExit, match="one wheel per package"):
        bcw.main(["check", "--dest", str(tmp_path), "--log", str(tmp_path / "log")])
    assert not (tmp_path / "log").exists()


def test_shipped_bytes_counts_the_tree_git_would_copy_and_the_carried_folder(tmp_path):
    import subprocess

    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / ".gitignore").write_text("/.whl/\n/build/\n")
    (tmp_path / "a.py").write_bytes(b"x" * 100)
    (tmp_path / "build").mkdir()
    (tmp_path / "build" / "big.o").write_bytes(b"x" * 10_000)  # ignored: not copied
    (tmp_path / ".whl" / "src").mkdir(parents=True)
    (tmp_path / ".whl" / "m.whl").write_bytes(b"x" * 1000)
    (tmp_path / ".whl" / "src" / "m.tar.gz").write_bytes(b"x" * 10)
    tree, carry = bcw.shipped_bytes(tmp_path, [tmp_path / ".whl"])
    assert tree == 100 + len("/.whl/\n/build/\n") and carry == 1010


def test_cuda_home_looks_past_a_wrapper_nvcc(tmp_path):
    wrapper = tmp_path / "usr/local/bin/nvcc"  # a shell script in front of the toolkit: no include/ beside it
    wrapper.parent.mkdir(parents=True)
    wrapper.write_text("#!/bin/sh\nexec /usr/local/cuda/bin/nvcc \"$@\"\n")
    toolkit = tmp_path / "cuda"
    (toolkit / "include").mkdir(parents=True)
    (toolkit / "bin").mkdir()
    (toolkit / "include" / "cuda_runtime_api.h").write_text("")
    (toolkit / "bin" / "nvcc").write_text("")
    assert bcw.cuda_home(str(toolkit / "bin" / "nvcc"), env={}) == str(toolkit)
    assert bcw.cuda_home(str(wrapper), env={"CUDA_HOME": "/opt/cuda-13"}) == "/opt/cuda-13"
    found = bcw.cuda_home(str(wrapper), env={})  # falls back to /usr/local/cuda, never the wrapper's parent
    assert found != str(tmp_path / "usr/local")


def test_cross_build_fetches_missing_sdists_with_the_venv_python(tmp_path, capsys, monkeypatch):
    exe = tmp_path / "pyenv" / "versions" / "3.12.1" / "bin" / "python3.12"
    exe.parent.mkdir(parents=True)
    exe.write_text("")
    monkeypatch.setenv("PYENV_ROOT", str(tmp_path / "pyenv"))
    bcw.main(["build", "--src", str(tmp_path / "src"), "--arch", "9.0", "--python", "3.12", "--torch", "2.11.0",
              "--venv", str(tmp_path / "venv"), "--dry-run"])
    out = capsys.readouterr().out
    assert f"{tmp_path / 'venv'}/bin/python " in out and f"build_cuda_wheels.py fetch --dest {tmp_path / 'src'}" in out
