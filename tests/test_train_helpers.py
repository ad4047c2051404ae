"""Shared pieces of the training tests (no tests here): synthetic PNGs, a nano model, a worker.

Run as a script, it pretrains the config in a JSON file (used by the SIGKILL/resume test):
    python tests/test_train_helpers.py cfg.json [step_delay_s]
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from roma.config import AresConfig, DataConfig, ModelConfig, MspConfig, RunConfig, TrainConfig
from roma.models.registry import MODELS, ModelSize

NANO = "test_nano"


def register_nano() -> None:
    """A 2-layer, 16-wide RoMA on a 4x4 grid of 8-px patches (32 px), 2x2 clusters: trains in ms."""
    MODELS.setdefault(NANO, ModelSize(16, 2, img_size=32, patch_size=8, cluster_size=2,
                                      decoder_dim=16, decoder_depth=2, decoder_heads=2))


def write_pngs(folder: Path, n: int = 24, size: int = 40, seed: int = 0) -> Path:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        arr = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        Image.fromarray(arr).save(folder / f"img_{i:03d}.png")
    return folder


class Slowed(torch.utils.data.Dataset):
    """The real dataset, each item delayed (lets a test kill a run between two checkpoints)."""

    def __init__(self, dataset, delay_s: float):
        self.dataset, self.delay_s = dataset, delay_s

    def __len__(self) -> int:
        return len(self.dataset)

    def set_epoch(self, epoch: int) -> None:
        self.dataset.set_epoch(epoch)

    def __getitem__(self, i: int):
        time.sleep(self.delay_s)
        return self.dataset[i]


def data_fn(delay_s: float = 0.0):
    """roma.data's dataset (a folder of PNGs here), optionally slowed."""
    from roma.train.pretrain import build_data

    def build(cfg: RunConfig, run_dir: Path, seed: int):
        dataset, collate, info = build_data(cfg, run_dir, seed)
        return (Slowed(dataset, delay_s) if delay_s else dataset), collate, info
    return build


def nano_config(root: Path, out: Path, **train) -> RunConfig:
    register_nano()
    t = dict(epochs=3, batch_size=4, accum_steps=1, warmup_epochs=1.0, ckpt_every_steps=2, log_every_steps=1,
             blr=1e-2)
    t.update(train)
    return RunConfig(experiment="trainsuite", output_root=str(out),
                     model=ModelConfig(name=NANO, img_size=32, patch_size=8, cluster_size=2, decoder_dim=16,
                                       decoder_depth=2, decoder_heads=2),
                     ares=AresConfig(enabled=True, region_sizes=(2,), angle_embed="binned"), msp=MspConfig(enabled=True, scales=(2,), hidden_dim=16),
                     data=DataConfig(root=str(root), num_workers=0), train=TrainConfig(**t))


def main(argv: list[str]) -> None:
    from roma.run import execute
    from roma.validation import build_config

    register_nano()
    cfg = build_config(json.loads(Path(argv[0]).read_text()))
    delay = float(argv[1]) if len(argv) > 1 else 0.0
    execute(cfg, data=data_fn(delay))


if __name__ == "__main__":
    main(sys.argv[1:])
