"""A shuffled, DDP-aware sampler that is reseeded each epoch (seed + epoch) and resumes mid-epoch.

The epoch's permutation depends only on (seed, epoch), so after a restart the sampler rebuilds it
and skips the `start` samples this rank had already consumed: no image is seen twice or skipped.
"""
from __future__ import annotations

from typing import Iterator

import torch
from torch.utils.data import Sampler


class ResumableSampler(Sampler[int]):
    def __init__(self, n: int, seed: int = 0, rank: int = 0, world_size: int = 1, shuffle: bool = True):
        if n < world_size:
            raise ValueError(f"dataset of {n} items is smaller than the world size {world_size}")
        self.n, self.seed, self.rank, self.world_size, self.shuffle = n, seed, rank, world_size, shuffle
        self.num_samples = n // world_size  # per rank; the tail is dropped so ranks stay in step
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Begin `epoch` at per-rank position `start` (0: the beginning)."""
        if not 0 <= start <= self.num_samples:
            raise ValueError(f"sampler start {start} outside [0, {self.num_samples}]")
        self.epoch, self.start = epoch, start

    def indices(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        return order[self.rank: self.num_samples * self.world_size: self.world_size]

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices()[self.start:])

    def __len__(self) -> int:
        return self.num_samples - self.start

    def state_dict(self, position: int) -> dict[str, int]:
        return {"epoch": self.epoch, "position": position, "seed": self.seed, "n": self.n,
                "world_size": self.world_size}
