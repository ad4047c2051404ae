"""Nested deterministic subsets: nested, order-independent, seeded, checksummed manifests."""
from __future__ import annotations

import hashlib
import json
import random

import pytest

from roma.data.subsets import read_manifest, subset_keys, subset_manifest

KEYS = [f"class{i % 7}/img_{i:05d}.jpg" for i in range(4000)]
SIZES = [125, 250, 500, 1000, 2000, 4000]


def test_subsets_are_nested_and_of_the_asked_size():
    previous: set[str] = set()
    for n in SIZES:
        s = subset_keys(KEYS, n, seed=0)
        assert len(s) == len(set(s)) == n and s == sorted(s)
        assert previous <= set(s)
        previous = set(s)
    assert previous == set(KEYS)


def test_independent_of_input_order_and_deterministic():
    shuffled = KEYS[:]
    random.Random(3).shuffle(shuffled)
    assert subset_keys(shuffled, 300, seed=5) == subset_keys(KEYS, 300, seed=5)
    assert subset_keys(KEYS, 300, seed=5) == subset_keys(list(reversed(KEYS)), 300, seed=5)


def test_seed_changes_the_draw_and_draw_is_spread_over_classes():
    a, b = set(subset_keys(KEYS, 700, seed=0)), set(subset_keys(KEYS, 700, seed=1))
    assert 0 < len(a & b) < 300  # independent draws overlap by about 700^2/4000 = 122
    per_class = [sum(k.startswith(f"class{c}/") for k in a) for c in range(7)]
    assert min(per_class) > 60  # a hash order, not the first files of a walk


def test_manifest_files_size_and_stable_checksum(tmp_path):
    shuffled = KEYS[:]
    random.Random(4).shuffle(shuffled)
    path, checksum = subset_manifest(KEYS, 250, seed=2, out_dir=tmp_path / "a")
    path2, checksum2 = subset_manifest(shuffled, 250, seed=2, out_dir=tmp_path / "b")
    assert path.name == "subset-250-seed2.txt"
    assert checksum == checksum2 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert path.read_bytes() == path2.read_bytes()
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta == {"size": 250, "sha256": checksum, "seed": 2, "total": 4000}
    keys, c = read_manifest(path)
    assert c == checksum and keys == subset_keys(KEYS, 250, seed=2)
    assert subset_manifest(KEYS, 250, seed=3, out_dir=tmp_path / "c")[1] != checksum
    path.write_text(path.read_text().replace(keys[0], "swapped.jpg"))
    with pytest.raises(ValueError, match="does not match"):
        read_manifest(path)


def test_asking_for_more_than_exist_names_both_numbers():
    with pytest.raises(ValueError, match=r"asks for 4001 images but the source holds only 4000"):
        subset_keys(KEYS, 4001, seed=0)
    with pytest.raises(ValueError, match="positive"):
        subset_keys(KEYS, 0, seed=0)
