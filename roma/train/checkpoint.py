"""Atomic checkpoints: `last.pt` (everything needed to resume exactly), kept epochs, `encoder.pt`.

last.pt = {"model", "optimizer", "scheduler", "scaler", "sampler", "rng", "step", "epoch",
           "config" (RunConfig.to_dict())}
encoder.pt = {"model_config", "model_name", "state_dict"} (docs/architecture.md)
Writes go through roma.atomic (a temporary file in the same folder, then os.replace), so a crash mid-write leaves
the previous file intact. Loads use weights_only=True (plain tensors, dicts, lists, numbers).
"""
from __future__ import annotations

import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from roma import atomic, torchfile
from roma.torchfile import UnreadableCheckpoint

LAST = "last.pt"
ENCODER = "encoder.pt"
REQUIRED = ("model", "optimizer", "scheduler", "step", "epoch", "sampler", "rng", "config")


def atomic_torch_save(obj: Any, path: Path) -> None:
    # torch.save gets a file object, not the temporary path: given a path, torch names the zip's
    # inner folder after the file, and the random temporary name would change the bytes
    with atomic.replacing(path) as tmp, open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())


# ----------------------------------------------------------------------------- RNG state
def rng_state() -> dict[str, Any]:
    """torch / numpy / python / cuda generator states as weights_only-loadable values."""
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        # numpy's legacy state: (name, uint32 keys, pos, has_gauss, cached_gaussian)
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "gauss": float(np_state[4])},
        # python's state is a tuple of 625 ints; stored as a list of ints
        "python": {"version": random.getstate()[0], "state": list(random.getstate()[1]),
                   "gauss": random.getstate()[2]},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ----------------------------------------------------------------------------- last.pt
def save_last(run_dir: Path, state: dict[str, Any], keep_epoch: int | None = None) -> Path:
    """Write <run_dir>/last.pt atomically; with keep_epoch also copy it to epoch_<n>.pt."""
    missing = [k for k in REQUIRED if k not in state]
    if missing:
        raise KeyError(f"checkpoint state lacks {missing}")
    path = Path(run_dir) / LAST
    atomic_torch_save(state, path)
    if keep_epoch is not None:
        keep = Path(run_dir) / f"epoch_{keep_epoch:04d}.pt"
        with atomic.replacing(keep) as tmp:
            shutil.copyfile(path, tmp)
    return path


def kept_checkpoints(run_dir: Path) -> list[Path]:
    """The kept epoch copies of last.pt (epoch_<n>.pt), newest first."""
    return sorted(Path(run_dir).glob("epoch_*.pt"), reverse=True)


def resume_fix(run_dir: Path) -> str:
    """What to do when <run_dir>/last.pt cannot be used."""
    kept = kept_checkpoints(run_dir)
    start_over = "relaunch with --force to start the run over (deletes its folder)"
    if kept:
        return (f"resume from the previous kept checkpoint (cp {kept[0]} {Path(run_dir) / LAST}, then relaunch "
                f"with --retry-failed), or {start_over}")
    return f"no earlier checkpoint is kept: {start_over}"


def load_last(run_dir: Path) -> dict[str, Any] | None:
    """The state in <run_dir>/last.pt, or None when there is none (a fresh run).

    UnreadableCheckpoint (one line: the file, why, what to do) when it cannot be read or lacks keys."""
    path = Path(run_dir) / LAST
    if not path.exists():
        return None
    state = torchfile.load(path, resume_fix(run_dir))
    missing = [k for k in REQUIRED if not isinstance(state, dict) or k not in state]
    if missing:
        raise UnreadableCheckpoint(path, f"not a last.pt: lacks keys {missing}", resume_fix(run_dir))
    return state


# ----------------------------------------------------------------------------- encoder.pt
def export_encoder(run_dir: Path, encoder: torch.nn.Module, model_name: str, model_config: dict) -> Path:
    """<run_dir>/encoder.pt: the input of every downstream evaluation (fp32 tensors on CPU)."""
    sd = {k: v.detach().to("cpu", torch.float32 if v.is_floating_point() else v.dtype).clone()
          for k, v in encoder.state_dict().items()}
    path = Path(run_dir) / ENCODER
    atomic_torch_save({"model_config": dict(model_config), "model_name": model_name, "state_dict": sd}, path)
    return path
