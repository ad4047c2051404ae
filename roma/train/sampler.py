"""A shuffled, DDP-aware sampler, reseeded each epoch, that resumes mid-epoch at any world size.

Positions are global: the epoch's permutation depends only on (seed, epoch), its first
steps_per_epoch x global_batch entries are the epoch (the tail is dropped), and optimizer step t
of the epoch takes entries [t x global_batch, (t+1) x global_batch) of it, split into equal
contiguous shares, one per rank. A checkpoint stores the number of entries consumed (a multiple of
global_batch); a restart with another world size rebuilds the same permutation and continues at the
same entry, so every step sees the same images in any layout: no image is seen twice or skipped.
"""
from __future__ import annotations

from typing import Iterator

import torch
from torch.utils.data import Sampler


class ResumableSampler(Sampler[int]):
    def __init__(self, n: int, global_batch: int, seed: int = 0, rank: int = 0, world_size: int = 1,
                 shuffle: bool = True):
        if global_batch % world_size:
            raise ValueError(f"global batch {global_batch} is not divisible by the world size {world_size}")
        if n < global_batch:
            raise ValueError(f"dataset of {n} items holds no full step of the global batch {global_batch}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside [0, world_size {world_size})")
        self.n, self.seed, self.shuffle = n, seed, shuffle
        self.global_batch, self.rank, self.world_size = global_batch, rank, world_size
        self.share = global_batch // world_size  # this rank's images per optimizer step
        self.epoch_len = n // global_batch * global_batch  # global entries of one epoch
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Begin `epoch` at global position `start` (entries consumed by all ranks; a step boundary)."""
        if not 0 <= start <= self.epoch_len or start % self.global_batch:
            raise ValueError(f"sampler start {start} is not a step boundary in [0, {self.epoch_len}] "
                             f"(global batch {self.global_batch})")
        self.epoch, self.start = epoch, start

    def order(self) -> list[int]:
        """The epoch's global order (all ranks): the first epoch_len entries of a seeded permutation."""
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            return torch.randperm(self.n, generator=g).tolist()[: self.epoch_len]
        return list(range(self.epoch_len))

    def indices(self) -> list[int]:
        """This rank's entries from `start` on: its share of each remaining step, in step order."""
        order, lo = self.order(), self.rank * self.share
        return [i for p in range(self.start, self.epoch_len, self.global_batch)
                for i in order[p + lo: p + lo + self.share]]

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices())

    def __len__(self) -> int:
        return (self.epoch_len - self.start) // self.world_size

    def state_dict(self, position: int) -> dict[str, int]:
        """What last.pt records: `position` is global (entries of the epoch consumed by all ranks)."""
        return {"epoch": self.epoch, "position": position, "seed": self.seed, "n": self.n,
                "global_batch": self.global_batch, "world_size": self.world_size}
