"""The pretraining dataset: bad images skipped and counted, reproducibility, subsets, real AID smoke."""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from roma.config import AresConfig, DataConfig, ModelConfig
from roma.data import (BadImageError, BadImageTracker, BadSample, PretrainDataset, PretrainTransform,
                       build_pretrain_dataset, collate, list_images)
from roma.data.shards import pack

MODEL = ModelConfig(img_size=32, patch_size=8)
ARES = AresConfig(region_sizes=(2, 1))


def make_images(root, n=12, seed=0):
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (24 + i, 40, 3), dtype=np.uint8)).save(root / f"img_{i:02d}.jpg")
    return root


def break_images(root):
    """One file of noise bytes, one JPEG cut in half, one empty file."""
    (root / "corrupt.jpg").write_bytes(np.random.default_rng(0).integers(0, 256, 500, dtype=np.uint8).tobytes())
    whole = (root / "img_00.jpg").read_bytes()
    (root / "truncated.jpg").write_bytes(whole[: len(whole) // 2])
    (root / "empty.png").write_bytes(b"")
    return {"corrupt.jpg", "truncated.jpg", "empty.png"}


def dataset(root, ares=ARES, seed=0):
    return PretrainDataset(list_images(root), PretrainTransform(32, 8, ares), seed=seed)


def test_sample_fields(tmp_path):
    ds = dataset(make_images(tmp_path / "d", 3))
    s = ds[1]
    assert s["image"].shape == s["target"].shape == (3, 32, 32) and s["image"].dtype == torch.float32
    assert s["region"].shape == (3,) and s["region"].dtype == torch.long and s["region"][2] > 0
    assert s["angle"].shape == () and s["index"] == 1
    assert ds.path(1).endswith("img_01.jpg")


def test_bad_images_come_back_marked_and_collate_drops_them(tmp_path):
    root = make_images(tmp_path / "d", 4)
    broken = break_images(root)
    ds = dataset(root)
    samples = [ds[i] for i in range(len(ds))]
    bad = [s for s in samples if isinstance(s, BadSample)]
    assert {ds.refs[b.index].key for b in bad} == broken  # the truncated JPEG is caught, not half-decoded
    assert all(b.error for b in bad)
    batch = collate(samples)
    assert batch["image"].shape == (4, 3, 32, 32) and batch["n_bad"] == 3
    assert sorted(batch["bad"]) == sorted(b.index for b in bad)
    assert set(batch["index"].tolist()).isdisjoint(batch["bad"])  # never replaced by another image
    empty = collate([b for b in bad])
    assert empty["image"] is None and empty["n_bad"] == 3
    with pytest.raises(TypeError, match="NoneType"):
        collate([None])


def test_tracker_counts_once_lists_and_fails_past_the_fraction(tmp_path):
    listing = tmp_path / "run" / "bad_images.txt"
    tr = BadImageTracker(0.25, listing, total=12, min_seen=4)
    assert tr.add(4, ["x.jpg"]) == 1 and tr.fraction == 0.25
    tr.add(8, ["x.jpg", "y.jpg"])  # x again: same image in a later batch/epoch, counted once
    assert tr.count == 2 and listing.read_text() == "x.jpg\ny.jpg\n"
    tr.add(12, [])  # a second epoch: the basis is capped at the 12 images there are
    assert tr.fraction == pytest.approx(2 / 12)
    with pytest.raises(BadImageError, match=r"4 of 12 images are unreadable \(33.33% > data.max_bad_fraction "
                                            r"25.00%\); the list is in .*bad_images.txt"):
        tr.add(0, ["z.jpg", "w.jpg"])
    state = tr.state_dict()
    again = BadImageTracker(0.25, None, total=12)
    again.load_state_dict(state)
    assert again.count == 4 and again.seen == 24


def test_tracker_waits_for_min_seen_then_fails_on_the_real_dataset(tmp_path):
    root = make_images(tmp_path / "d", 6)
    break_images(root)  # 3 bad of 9
    ds = dataset(root, ares=AresConfig(enabled=False))
    tr = BadImageTracker(0.01, tmp_path / "bad.txt", min_seen=1000)
    for batch in DataLoader(ds, batch_size=3, collate_fn=collate):
        tr.update(batch)  # fewer than min_seen images read: no verdict yet
    assert tr.count == 3 and len((tmp_path / "bad.txt").read_text().splitlines()) == 3
    with pytest.raises(BadImageError, match=r"3 of 9 images are unreadable \(33.33%"):
        tr.finish()
    known = BadImageTracker(0.01, None, total=9)  # size known: fails at the first batch (corrupt, empty)
    with pytest.raises(BadImageError, match=r"2 of 9 images"):
        for batch in DataLoader(ds, batch_size=3, collate_fn=collate):
            known.update(batch)
    ok = BadImageTracker(0.5, None, total=9)
    for batch in DataLoader(ds, batch_size=3, collate_fn=collate):
        ok.update(batch)
    ok.finish()
    assert ok.count == 3 and ok.seen == 9


def test_reproducible_from_seed_epoch_index_whatever_the_workers(tmp_path):
    root = make_images(tmp_path / "d", 8)
    a, b = dataset(root, seed=3), dataset(root, seed=3)
    assert torch.equal(a[5]["image"], b[5]["image"]) and a[5]["angle"] == b[5]["angle"]
    assert torch.equal(a[5]["image"], a[5]["image"])  # reading twice: same draw
    b.set_epoch(1)
    assert not torch.equal(a[5]["image"], b[5]["image"])
    assert not torch.equal(a[5]["image"], dataset(root, seed=4)[5]["image"])
    order = [7, 2, 5, 0, 3, 1]
    one = list(DataLoader(a, batch_size=2, sampler=order, collate_fn=collate, num_workers=0))
    two = list(DataLoader(a, batch_size=2, sampler=order, collate_fn=collate, num_workers=2))
    for x, y in zip(one, two):
        assert torch.equal(x["image"], y["image"]) and torch.equal(x["region"], y["region"])
    single = torch.stack([a[i]["image"] for i in order])  # batch composition does not matter either
    assert torch.equal(torch.cat([x["image"] for x in one]), single)


def test_shards_give_the_same_samples_as_the_folder(tmp_path):
    root = make_images(tmp_path / "d", 5)
    pack(root, tmp_path / "s", shard_size=2)
    folder, shards = dataset(root), dataset(tmp_path / "s")
    assert [r.key for r in folder.refs] == [r.key for r in shards.refs]
    assert list(shards.refs) == list_images(tmp_path / "s")  # the packed ref table gives the refs back
    for i in range(5):
        assert torch.equal(folder[i]["image"], shards[i]["image"])
    assert re.search(r"/s/shard-00000[0-2]\.tar:img_02\.jpg$", shards.path(2))  # the shard its rank put it in


def test_build_with_subset_writes_manifest_and_detects_changed_data(tmp_path):
    root = make_images(tmp_path / "d", 10)
    cfg = DataConfig(root=str(root), subset=6, subset_seed=1)
    ds, info = build_pretrain_dataset(cfg, MODEL, ARES, tmp_path / "run", seed=0)
    assert len(ds) == info["data_size"] == 6 and info["total"] == 10
    assert info["manifest"].endswith("subset-6-seed1.txt") and len(info["checksum"]) == 64
    ds2, info2 = build_pretrain_dataset(cfg, MODEL, ARES, tmp_path / "run", seed=0)  # a resume
    assert info2["checksum"] == info["checksum"] and [r.key for r in ds2.refs] == [r.key for r in ds.refs]
    small, _ = build_pretrain_dataset(DataConfig(root=str(root), subset=3, subset_seed=1), MODEL, ARES,
                                      tmp_path / "run3", seed=0)
    assert {r.key for r in small.refs} <= {r.key for r in ds.refs}
    for i in range(2):
        (root / ds.refs[i].key).unlink()
    with pytest.raises(ValueError, match="changed since this run started"):
        build_pretrain_dataset(cfg, MODEL, ARES, tmp_path / "run", seed=0)
    with pytest.raises(ValueError, match="asks for 11 images but the source holds only 8"):
        build_pretrain_dataset(DataConfig(root=str(root), subset=11), MODEL, ARES, tmp_path / "r2", seed=0)
    full, info3 = build_pretrain_dataset(DataConfig(root=str(root)), MODEL, ARES, tmp_path / "r3", seed=0)
    assert len(full) == info3["data_size"] == 8 and info3["manifest"] is None


def test_real_aid_smoke(aid_root, shared_data, tmp_path):
    folder = list_images(aid_root)
    manifest = list_images(shared_data / "AID_manifest.csv")
    assert len(folder) == len(manifest) == 10_000
    assert {r.path for r in folder} == {str(aid_root.parent / r.key) for r in manifest}
    cfg = DataConfig(root=str(aid_root), subset=64, subset_seed=0)
    ds, info = build_pretrain_dataset(cfg, ModelConfig(img_size=64, patch_size=16), AresConfig(region_sizes=(2, 1)),
                                      tmp_path, seed=0)
    assert info["data_size"] == 64 and info["total"] == 10_000
    classes = {r.key.split("/")[0] for r in ds.refs}
    assert len(classes) > 15  # a hashed draw spreads over AID's 30 classes
    batch = collate([ds[i] for i in range(16)])
    assert batch["image"].shape == (16, 3, 64, 64) and batch["n_bad"] == 0
    assert (batch["region"][:, 2] > 0).all()
    assert -1.0 < batch["image"].mean().item() < 1.0
