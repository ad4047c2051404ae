"""slurm/build_cuda_wheels.py without a GPU: architecture detection, the setup.py patch, the plan."""
import importlib.util
import io
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


def _sdists(folder):
    for package, (prefix, _) in bcw.PACKAGES.items():
        root = f"{prefix}-{bcw.PINS[package]}"
        with tarfile.open(folder / f"{root}.tar.gz", "w:gz") as tar:
            data = SETUP.encode()
            info = tarfile.TarInfo(f"{root}/setup.py")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_dry_run_prints_an_offline_single_arch_parallel_build(tmp_path, capsys):
    _sdists(tmp_path)
    bcw.main(["build", "--src", str(tmp_path), "--dest", str(tmp_path / "wheels"), "--arch", "9.0",
              "--jobs", "16", "--install", "--dry-run"])
    out = capsys.readouterr().out
    assert "sm_90 only" in out
    builds = [line for line in out.splitlines() if " wheel " in line]
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
