"""Atomic checkpoint writes, RNG state round trip, encoder export readable downstream."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from roma.train import checkpoint as ck


def _state(step: int) -> dict:
    return {"model": {"w": torch.full((3,), float(step))}, "optimizer": {}, "scheduler": {}, "step": step,
            "epoch": 0, "sampler": {"position": step}, "rng": ck.rng_state(), "config": {}}


def test_crash_during_write_leaves_old_file(tmp_path, monkeypatch):
    ck.save_last(tmp_path, _state(1))

    def torn_save(obj, f, *a, **k):  # writes half a file, then the process "dies"
        f.write(b"PK\x03\x04 partial")
        raise OSError("disk full")

    monkeypatch.setattr(ck.torch, "save", torn_save)
    with pytest.raises(OSError, match="disk full"):
        ck.save_last(tmp_path, _state(2))
    monkeypatch.undo()
    assert ck.load_last(tmp_path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temp file left behind


def test_keep_epoch_copy_and_missing_keys(tmp_path):
    ck.save_last(tmp_path, _state(5), keep_epoch=3)
    assert torch.load(tmp_path / "epoch_0003.pt", weights_only=True)["step"] == 5
    with pytest.raises(KeyError, match="rng"):
        ck.save_last(tmp_path, {k: v for k, v in _state(1).items() if k != "rng"})
    assert ck.load_last(tmp_path / "nothing") is None
    (tmp_path / "last.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(RuntimeError, match="cannot read checkpoint"):
        ck.load_last(tmp_path)


def test_rng_state_round_trip(tmp_path):
    ck.seed_everything(7)
    ck.atomic_torch_save(ck.rng_state(), tmp_path / "rng.pt")
    want = (torch.rand(3), np.random.rand(3), random.random())
    ck.set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    got = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(want[0], got[0]) and np.array_equal(want[1], got[1]) and want[2] == got[2]


def test_encoder_export_loads_downstream(tmp_path):
    from roma.config import ModelConfig, to_plain
    from roma.models import create_model
    from roma.models.downstream import load_encoder_checkpoint

    model = create_model("roma_micro_tiny", img_size=32, patch_size=8, cluster_size=2)
    path = ck.export_encoder(tmp_path, model.encoder, "roma_micro_tiny", to_plain(ModelConfig(name="roma_micro_tiny")))
    blob = load_encoder_checkpoint(path)
    assert blob["model_name"] == "roma_micro_tiny"
    sd = model.encoder.state_dict()
    assert blob["state_dict"].keys() == sd.keys()
    assert all(torch.equal(blob["state_dict"][k], sd[k]) for k in sd)
