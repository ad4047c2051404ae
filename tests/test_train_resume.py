"""A run killed with SIGKILL mid-epoch and resumed ends bitwise equal to an uninterrupted run,
and its MLflow run holds every step exactly once."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from test_train_helpers import nano_config, write_pngs

HELPER = Path(__file__).with_name("test_train_helpers.py")


def _worker(cfg, tmp: Path, delay: float = 0.0) -> subprocess.Popen:
    cfg_file = tmp / f"cfg_{time.monotonic_ns()}.json"
    cfg_file.write_text(json.dumps(cfg.to_dict()))
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(HELPER.parent), os.environ.get("PYTHONPATH")]))}
    return subprocess.Popen([sys.executable, str(HELPER), str(cfg_file), str(delay)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(p: subprocess.Popen, timeout: float = 120) -> None:
    out, _ = p.communicate(timeout=timeout)
    assert p.returncode == 0, out[-3000:]


def _run_dir(cfg) -> Path:
    return Path(cfg.output_root) / cfg.experiment / cfg.run_id


def _steps(cfg, key: str) -> list[int]:
    from mlflow.tracking import MlflowClient

    from roma.tracking import tracking_uri

    run_id = (_run_dir(cfg) / "mlflow_run_id").read_text().strip()
    return sorted(m.step for m in MlflowClient(tracking_uri(cfg)).get_metric_history(run_id, f"train/{key}"))


def test_sigkill_mid_epoch_then_resume_is_bitwise_identical(tmp_path):
    imgs = write_pngs(tmp_path / "imgs", n=24)  # 6 steps of 4 images per epoch, 3 epochs = 18 steps
    ref_cfg = nano_config(imgs, tmp_path / "ref")
    cut_cfg = nano_config(imgs, tmp_path / "cut")
    assert ref_cfg.run_id == cut_cfg.run_id  # same computation, different output roots

    ref = _worker(ref_cfg, tmp_path)  # the uninterrupted run, in parallel with the killed one
    victim = _worker(cut_cfg, tmp_path, delay=0.05)  # slowed so we can kill it between checkpoints
    last = _run_dir(cut_cfg) / "last.pt"
    deadline = time.monotonic() + 90
    while not last.exists() and victim.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    victim.send_signal(signal.SIGKILL)
    victim.communicate(timeout=30)
    assert victim.returncode == -signal.SIGKILL
    killed = torch.load(last, map_location="cpu", weights_only=True)
    assert 0 < killed["step"] < 18
    assert killed["sampler"]["position"] % 24 != 0, "the kill should land mid-epoch"

    _finish(_worker(cut_cfg, tmp_path))  # resume from last.pt
    _finish(ref)

    a = torch.load(_run_dir(ref_cfg) / "last.pt", map_location="cpu", weights_only=True)
    b = torch.load(_run_dir(cut_cfg) / "last.pt", map_location="cpu", weights_only=True)
    assert a["step"] == b["step"] == 18 and a["epoch"] == b["epoch"] == 3
    assert a["model"].keys() == b["model"].keys()
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), f"weights differ at {k}"
    for pa, pb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert all(torch.equal(pa[k], pb[k]) for k in pa)

    for key in ("loss", "lr", "loss_token", "loss_block_s2", "images_per_s", "bad_images"):
        assert _steps(cut_cfg, key) == list(range(1, 19)), key
    assert _steps(ref_cfg, "loss") == list(range(1, 19))
    enc = torch.load(_run_dir(cut_cfg) / "encoder.pt", map_location="cpu", weights_only=True)
    assert set(enc) == {"model_config", "model_name", "state_dict"}
    assert all(torch.equal(v, b["model"]["encoder." + k]) for k, v in enc["state_dict"].items())
