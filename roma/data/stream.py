"""Streaming over tar shards: an IterableDataset that reads each shard front to back.

    ds = ShardStream(expand_shard_pattern("/data/s/shard-{000000..000999}.tar"), transform, seed=0,
                     rank=rank, world_size=world)
    ds.set_epoch(epoch)
    loader = DataLoader(ds, batch_size=64, num_workers=8, collate_fn=collate)

For file systems where even a seek per image is slow. Each epoch the shard order is a permutation
seeded by (seed, epoch); shard k of it goes to global reader k mod (world_size x num_workers) (the
n mod readers left over wait for another epoch, so every reader reads as many shards), and the
images of a shard are shuffled in memory (one shard per worker is held at a time). Equal shard
sizes (what `pack` makes, but the last) keep ranks in step. Sample `index`
is the image's position in the key-sorted listing of all these shards (what `PretrainDataset` over
the same shards calls it, whatever order the shards hold them in), and its randomness comes from (seed, epoch, index), so a packed image gets the same
crop in both datasets. Unlike PretrainDataset with ResumableSampler, a stream restarts its epoch
on resume; the map-style pair is what the training loop uses.
"""
from __future__ import annotations

from typing import Any, Iterator, Sequence

import numpy as np
from torch.utils.data import IterableDataset, get_worker_info

from .dataset import DECODE_ERRORS, BadSample, RefTable, decode_rgb, sample_rng
from .shards import index_shards, read_in_order
from .transforms import PretrainTransform


class ShardStream(IterableDataset):
    def __init__(self, shards: Sequence[str], transform: PretrainTransform, seed: int = 0,
                 rank: int = 0, world_size: int = 1):
        if not shards:
            raise ValueError("ShardStream needs at least one shard")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside [0, world_size {world_size})")
        self.shards, self.transform, self.seed = list(shards), transform, seed
        self.rank, self.world_size, self.epoch = rank, world_size, 0
        refs = index_shards(self.shards)  # from the index when the shards have one, else one header pass
        self.refs = RefTable(refs)  # in shard order
        # shard s holds refs bounds[s] .. bounds[s + 1]; sample index = position in the key-sorted listing
        number = {path: s for s, path in enumerate(self.shards)}
        self.bounds = np.searchsorted([number[r.path] for r in refs], np.arange(len(self.shards) + 1))
        self.index = np.empty(len(refs), dtype=np.int64)
        self.index[sorted(range(len(refs)), key=lambda i: refs[i].key)] = np.arange(len(refs))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @property
    def num_images(self) -> int:
        return len(self.refs)

    def my_shards(self, worker: int = 0, num_workers: int = 1) -> list[int]:
        """Shard numbers this (rank, worker) reads this epoch."""
        readers = self.world_size * num_workers
        if len(self.shards) < readers:
            raise ValueError(f"{len(self.shards)} shard(s) cannot feed {readers} readers "
                             f"(world_size {self.world_size} x num_workers {num_workers}): pack smaller shards")
        # every reader gets the same number of shards (DDP ranks must stay in step); the remainder,
        # a different few shards each epoch, waits for a later epoch
        order = np.random.default_rng([self.seed, self.epoch]).permutation(len(self.shards))
        order = order[: len(order) // readers * readers]
        return [int(s) for s in order[self.rank * num_workers + worker::readers]]

    def __iter__(self) -> Iterator[dict[str, Any] | BadSample]:
        info = get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        for s in self.my_shards(worker, num_workers):
            lo, hi = int(self.bounds[s]), int(self.bounds[s + 1])
            items = list(read_in_order([self.refs[i] for i in range(lo, hi)]))  # one open, front to back
            order = np.random.default_rng([self.seed, self.epoch, s]).permutation(len(items))
            for j in order:
                data = items[j]
                key, index = self.refs.key(lo + int(j)), int(self.index[lo + int(j)])
                try:
                    img = decode_rgb(data)
                except DECODE_ERRORS as e:
                    yield BadSample(index, f"{self.shards[s]}:{key}", f"{type(e).__name__}: {e}")
                    continue
                out = self.transform(img, sample_rng(self.seed, self.epoch, index))
                out["index"] = index
                yield out
