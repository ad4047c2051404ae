"""The resumable sampler: seeded per epoch, DDP shards, restart mid-epoch."""
from __future__ import annotations

import pytest

from roma.train.sampler import ResumableSampler


def test_reseeded_each_epoch_and_deterministic():
    s = ResumableSampler(50, seed=3)
    e0 = s.indices()
    s.set_epoch(1)
    e1 = s.indices()
    assert sorted(e0) == sorted(e1) == list(range(50)) and e0 != e1
    s.set_epoch(0)
    assert s.indices() == e0 == ResumableSampler(50, seed=3).indices()
    assert ResumableSampler(50, seed=4).indices() != e0


def test_resume_mid_epoch_yields_the_rest():
    s = ResumableSampler(40, seed=0)
    s.set_epoch(2)
    full = list(s)
    s.set_epoch(2, start=13)
    assert list(s) == full[13:] and len(s) == 27
    assert s.state_dict(13)["position"] == 13
    with pytest.raises(ValueError, match="start"):
        s.set_epoch(2, start=41)


def test_ranks_partition_the_epoch():
    parts = [ResumableSampler(43, seed=1, rank=r, world_size=4) for r in range(4)]
    for p in parts:
        p.set_epoch(5)
    got = [i for p in parts for i in p]
    assert len(got) == len(set(got)) == 40  # 43 // 4 * 4: the tail is dropped, no duplicates
    assert all(len(p) == 10 for p in parts)
