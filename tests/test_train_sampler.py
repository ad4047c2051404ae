"""The resumable sampler: seeded per epoch, global positions, the same steps at every world size."""
from __future__ import annotations

import pytest

from roma.train.sampler import ResumableSampler


def _steps(n: int, global_batch: int, world: int, epoch: int = 0, start: int = 0, seed: int = 1):
    """The set of images of each optimizer step, all ranks together."""
    ranks = [ResumableSampler(n, global_batch, seed=seed, rank=r, world_size=world) for r in range(world)]
    share = global_batch // world
    for s in ranks:
        s.set_epoch(epoch, start)
    per_rank = [list(s) for s in ranks]
    steps = len(per_rank[0]) // share
    return [sorted(i for p in per_rank for i in p[t * share:(t + 1) * share]) for t in range(steps)]


def test_reseeded_each_epoch_and_deterministic():
    s = ResumableSampler(50, 10, seed=3)
    e0 = s.indices()
    s.set_epoch(1)
    e1 = s.indices()
    assert len(set(e0)) == len(e0) == 50 and sorted(e0) == sorted(e1) and e0 != e1
    s.set_epoch(0)
    assert s.indices() == e0 == ResumableSampler(50, 10, seed=3).indices()
    assert ResumableSampler(50, 10, seed=4).indices() != e0


def test_resume_mid_epoch_yields_the_rest():
    s = ResumableSampler(40, 8, seed=0)
    s.set_epoch(2)
    full = list(s)
    s.set_epoch(2, start=16)
    assert list(s) == full[16:] and len(s) == 24
    assert s.state_dict(16) == {"epoch": 2, "position": 16, "seed": 0, "n": 40, "global_batch": 8, "world_size": 1}
    for bad in (41, 13):  # past the epoch, not a step boundary
        with pytest.raises(ValueError, match="step boundary"):
            s.set_epoch(2, start=bad)


def test_ranks_partition_the_epoch_and_drop_the_tail():
    parts = [ResumableSampler(43, 8, seed=1, rank=r, world_size=4) for r in range(4)]
    for p in parts:
        p.set_epoch(5)
    got = [i for p in parts for i in p]
    assert len(got) == len(set(got)) == 40  # 43 // 8 * 8: the tail is dropped, no duplicates
    assert all(len(p) == 10 for p in parts)


@pytest.mark.parametrize("world", [2, 4, 8])
def test_every_step_holds_the_same_images_at_any_world_size(world):
    assert _steps(100, 8, world, epoch=3) == _steps(100, 8, 1, epoch=3)


def test_resume_at_another_world_size_continues_at_the_same_image():
    """A checkpoint's position is global: 2 steps done on 1 rank, the rest on 4 ranks (or back)."""
    whole = _steps(100, 8, 1, epoch=1)
    assert _steps(100, 8, 4, epoch=1, start=16) == whole[2:]
    assert _steps(100, 8, 1, epoch=1, start=48) == _steps(100, 8, 2, epoch=1)[6:]


def test_a_world_size_that_does_not_divide_the_global_batch_is_refused():
    with pytest.raises(ValueError, match="not divisible by the world size 3"):
        ResumableSampler(100, 8, rank=0, world_size=3)
    with pytest.raises(ValueError, match="no full step"):
        ResumableSampler(7, 8)
