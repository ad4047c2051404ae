"""Streaming over shards: every image once per epoch, split across ranks/workers, same samples as map-style."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from roma.config import AresConfig
from roma.data import BadSample, PretrainDataset, PretrainTransform, ShardStream, collate, list_images, pack


@pytest.fixture
def shards(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "imgs"
    root.mkdir()
    for i in range(9):
        Image.fromarray(rng.integers(0, 256, (20, 28, 3), dtype=np.uint8)).save(root / f"im{i}.png")
    (root / "im9.png").write_bytes(b"not a png")
    pack(root, tmp_path / "s", shard_size=2)  # 5 shards
    return [str(p) for p in sorted((tmp_path / "s").glob("*.tar"))]


def idx(sample) -> int:
    return sample.index if isinstance(sample, BadSample) else sample["index"]


def transform():
    return PretrainTransform(16, 8, AresConfig(region_sizes=(1,)))


def test_stream_matches_map_style_and_covers_every_image(shards):
    stream = ShardStream(shards, transform(), seed=1)
    mapped = PretrainDataset(list_images(shards[0].replace("000000", "*")), transform(), seed=1)
    stream.set_epoch(2)
    mapped.set_epoch(2)
    seen = list(stream)
    assert sorted(idx(s) for s in seen) == list(range(10)) == list(range(stream.num_images))
    for s in seen:
        m = mapped[idx(s)]
        if isinstance(s, BadSample):
            assert isinstance(m, BadSample) and s.path.endswith("im9.png")
        else:
            assert torch.equal(s["image"], m["image"]) and torch.equal(s["region"], m["region"])
    stream.set_epoch(3)
    assert [idx(s) for s in stream] != [idx(s) for s in seen]  # reshuffled each epoch


def test_ranks_and_workers_split_the_shards(shards):
    per_rank = [ShardStream(shards, transform(), seed=0, rank=r, world_size=2) for r in range(2)]
    got = [d.my_shards(w, 2) for d in per_rank for w in range(2)]
    assert [len(g) for g in got] == [1, 1, 1, 1]  # 5 shards, 4 readers: one each, one left over
    assert len(set(sum(got, []))) == 4
    with pytest.raises(ValueError, match="5 shard.*cannot feed 6 readers"):
        per_rank[0].my_shards(0, 3)
    loader = DataLoader(ShardStream(shards[:4], transform()), batch_size=3, num_workers=2, collate_fn=collate)
    indices = sorted(i for b in loader for i in b["index"].tolist() + b["bad"])
    assert indices == list(range(8))
