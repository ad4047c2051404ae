"""The shard index: written by pack, read without opening a tar, stale shards named; shards in
subset-rank order, so a nested subset is a prefix of the shard list."""
from __future__ import annotations

import builtins
import json
import os
import shutil
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from roma.config import AresConfig, DataConfig, ModelConfig
from roma.data import build_pretrain_dataset, list_images, read_bytes
from roma.data.shard_reader import INDEX_NAME, TABLE_NAME, StaleIndexError, read_index, scan_shard, subset_prefix
from roma.data.shards import build_index, main as shards_main, pack, verify
from roma.data.subsets import rank, subset_keys

MODEL = ModelConfig(img_size=16, patch_size=8)
ARES = AresConfig(region_sizes=(1,))


@pytest.fixture
def folder(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "imgs"
    for i in range(23):
        sub = root / f"c{i % 3}"
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)).save(sub / f"im{i:02d}.png")
    return root


@pytest.fixture
def packed(folder, tmp_path):
    out = tmp_path / "shards"
    shards = pack(folder, out, shard_size=4)  # 6 shards: 4 x 5 + 3
    return folder, out, [str(s) for s in shards]


class Opens:
    """Records every file opened with builtins.open; tarfile.open is refused."""

    def __init__(self, monkeypatch):
        self.paths: list[str] = []
        real = builtins.open

        def spy(file, *a, **k):
            self.paths.append(str(file))
            return real(file, *a, **k)

        def no_tar(*a, **k):
            raise AssertionError("a tar was opened with tarfile")

        monkeypatch.setattr(builtins, "open", spy)
        monkeypatch.setattr(tarfile, "open", no_tar)

    def tars(self) -> set[str]:
        return {p for p in self.paths if p.endswith(".tar")}


def test_pack_writes_an_index_that_matches_the_tar_headers(packed):
    folder, out, shards = packed
    index = read_index(out)
    assert (out / INDEX_NAME).is_file() and (out / TABLE_NAME).is_file()
    assert [s.name for s in index.shards] == [os.path.basename(s) for s in shards]
    assert [s.images for s in index.shards] == [4, 4, 4, 4, 4, 3] and index.num_images == 23
    assert [s.bytes for s in index.shards] == [os.path.getsize(s) for s in shards]
    info = json.loads((out / INDEX_NAME).read_text())
    assert info["order"] == {"by": "subset_rank", "seed": 0}
    for p, s in enumerate(shards):  # offsets and sizes are those a header scan finds
        rows = index.rows(p)
        assert [(m.key, m.offset, m.size) for m in scan_shard(s)] == list(zip(rows["key"], rows["offset"], rows["size"]))
    keys = index.table.column("key").to_pylist()  # shard order = nested-subset rank order of seed 0
    assert keys == sorted(keys, key=lambda k: rank(k, 0))
    assert index.keys_sha256 == json.loads((out / INDEX_NAME).read_text())["keys_sha256"]


def test_reading_indexed_shards_opens_no_tar(packed, monkeypatch):
    folder, out, shards = packed
    expected = {r.key: read_bytes(r) for r in list_images(folder)}
    opens = Opens(monkeypatch)
    for source in (out, str(out / "shard-*.tar"), str(out / "shard-{000000..000005}.tar")):
        refs = list_images(source)
        assert [r.key for r in refs] == sorted(expected)
    assert opens.tars() == set()  # listing read index.json + index.parquet only
    monkeypatch.undo()
    assert {r.key: read_bytes(r) for r in list_images(out)} == expected  # offsets point at the same bytes


def test_stale_index_is_an_error_naming_the_file(packed):
    folder, out, shards = packed
    with open(shards[2], "ab") as f:  # a shard rewritten (different size)
        f.write(b"\0" * 512)
    with pytest.raises(StaleIndexError, match=r"shard-000002\.tar has \d+ bytes, the index says"):
        list_images(out)
    with pytest.raises(StaleIndexError, match="rebuild it with `python -m roma.data.shards index"):
        list_images(str(out / "shard-*.tar"))
    assert shards_main(["index", str(out)]) == 0  # rebuilt: readable again
    assert len(list_images(out)) == 23
    shutil.copy(shards[0], out / "shard-000099.tar")  # a shard the index does not list
    with pytest.raises(StaleIndexError, match="does not list .*shard-000099.tar"):
        list_images(out)
    os.remove(out / "shard-000099.tar")
    os.remove(shards[5])  # a listed shard gone
    with pytest.raises(StaleIndexError, match="1 listed shard.*shard-000005.tar"):
        list_images(out)


def test_tampered_table_and_same_size_rewrite(packed, capsys):
    folder, out, shards = packed
    table = out / TABLE_NAME
    table.write_bytes(table.read_bytes()[:-1] + b"x")
    with pytest.raises(StaleIndexError, match=r"index\.parquet does not match .*index\.json"):
        list_images(out)
    build_index(out)
    data = bytearray(open(shards[1], "rb").read())
    data[600] ^= 0xFF  # same size, other content: only a re-hash sees it
    open(shards[1], "wb").write(bytes(data))
    assert verify(out) == [shards[1]]
    assert shards_main(["verify", str(out)]) == 1
    assert "shard-000001.tar" in capsys.readouterr().err
    (out / INDEX_NAME).write_text("{not json")
    with pytest.raises(ValueError, match="index.json is not valid JSON"):
        list_images(out)


def test_subset_reads_only_the_first_shards_and_gives_the_folder_images(packed, tmp_path, monkeypatch):
    folder, out, shards = packed
    n = 10  # 4 + 4 + 2: the first 3 of 6 shards
    refs, total = subset_prefix(out, n, seed=0)
    assert total == 23 and {r.path for r in refs} == set(shards[:3])
    assert [r.key for r in refs] == subset_keys(list_images(folder), n, seed=0)
    from_folder, info_f = build_pretrain_dataset(DataConfig(root=str(folder), subset=n), MODEL, ARES,
                                                 tmp_path / "rf", seed=5)
    opens = Opens(monkeypatch)
    from_shards, info_s = build_pretrain_dataset(DataConfig(root=str(out), subset=n), MODEL, ARES,
                                                 tmp_path / "rs", seed=5)
    samples = [from_shards[i] for i in range(len(from_shards))]
    assert opens.tars() == set(shards[:3])  # the subset's images only: the rest of the set is never read
    monkeypatch.undo()
    assert (info_s["data_size"], info_s["total"]) == (info_f["data_size"], info_f["total"]) == (n, 23)
    assert info_s["checksum"] == info_f["checksum"]
    for i, s in enumerate(samples):  # same keys, same indices, same pixels and augmentation as the folder
        f = from_folder[i]
        assert from_folder.refs.key(i) == from_shards.refs.key(i)
        assert torch.equal(f["image"], s["image"]) and torch.equal(f["region"], s["region"])
    with pytest.raises(ValueError, match="asks for 24 images but the source holds only 23"):
        subset_prefix(out, 24, seed=0)


def test_other_seed_or_foreign_order_falls_back_to_ranking_every_image(packed, tmp_path):
    folder, out, shards = packed
    assert subset_prefix(out, 10, seed=1) is None  # packed in seed 0's order
    ds, info = build_pretrain_dataset(DataConfig(root=str(out), subset=10, subset_seed=1), MODEL, ARES,
                                      tmp_path / "r", seed=0)
    assert [ds.refs.key(i) for i in range(len(ds))] == subset_keys(list_images(folder), 10, seed=1)
    assert subset_prefix(folder, 10, seed=0) is None  # a folder tree is not a shard set
    assert subset_prefix(str(out / "shard-00000[13].tar"), 3, seed=0) is not None  # any in-order selection
    os.remove(out / INDEX_NAME)
    assert subset_prefix(out, 10, seed=0) is None  # no index: no prefix claim
    build_index(out, seed=1)  # not in seed 1's order: indexed, order not claimed
    assert read_index(out).order_seed is None and subset_prefix(out, 10, seed=1) is None
    assert shards_main(["index", str(out)]) == 0  # seed 0: the order is checked and recorded
    assert read_index(out).order_seed == 0


def test_pack_cli_reports_the_index(folder, tmp_path, capsys):
    assert shards_main(["pack", str(folder), str(tmp_path / "s"), "--shard-size", "5", "--seed", "3"]) == 0
    out = capsys.readouterr().out
    assert "packed 23 images into 5 shard(s), subset-rank order of seed 3" in out and INDEX_NAME in out
    assert subset_prefix(tmp_path / "s", 7, seed=3)[0] == sorted(
        [r for r in list_images(tmp_path / "s") if r.key in set(subset_keys(list_images(folder), 7, 3))],
        key=lambda r: r.key)
