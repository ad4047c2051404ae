"""Nested, deterministic data subsets (the data-scaling axis: 62.5K, 125K, ... 4M images).

Every image key gets a rank: its blake2b hash keyed with the seed. subset(n) = the n lowest ranks.
So subsets of one seed are nested (subset(62.5K) is inside subset(125K)), depend only on the set
of keys (not on walk or manifest order), and a new seed gives an independent draw.

    keys = subset_keys(all_keys, 62_500, seed=0)
    manifest, checksum = subset_manifest(all_keys, 62_500, seed=0, out_dir=run_dir)

A manifest is `subset-<n>-seed<seed>.txt`, the chosen keys sorted, one a line (its sha256 is the
checksum logged to MLflow as `data_checksum`), and a `.json` beside it with size, seed, total
and checksum.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import os
from pathlib import Path
from typing import Iterable

import numpy as np

from roma import atomic

from .refs import ImageRef


def _key(item: str | ImageRef) -> str:
    return item.key if isinstance(item, ImageRef) else str(item)


def _ranker(seed: int):
    """rank(., seed) as one function: a keyed hasher set up once and copied per key (setting up the key
    costs as much as hashing a short path, and a 4M-image source ranks 4M of them)."""
    base = hashlib.blake2b(digest_size=16, key=f"roma-subset-{seed}".encode())

    def ranked(key: str) -> bytes:
        h = base.copy()
        h.update(key.encode("utf-8"))
        return h.digest()
    return ranked


def rank(key: str, seed: int) -> bytes:
    """The position of `key` in seed's order (compare as bytes)."""
    return _ranker(seed)(key)


def check_subset_size(n: int, total: int) -> None:
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"data.subset must be a positive number of images, got {n!r}")
    if n > total:
        raise ValueError(f"data.subset asks for {n} images but the source holds only {total}")


def subset_keys(items: Iterable[str | ImageRef], n: int, seed: int) -> list[str]:
    """The n keys of lowest rank under `seed`, sorted by key. Errors name both numbers when n > total."""
    keys = sorted({_key(x) for x in items})
    check_subset_size(n, len(keys))
    return sorted(ranked_keys(keys, seed)[:n])


def ranked_keys(keys: Iterable[str], seed: int) -> list[str]:
    """Every key in seed's order: subset(n) is the first n (roma.data.fingerprint ranks once per seed)."""
    r = _ranker(seed)
    return sorted(keys, key=lambda k: (r(k), k))


def rank_order(sorted_keys: list[str], seed: int) -> np.ndarray:
    """The indices of `sorted_keys` (sorted, unique) in seed's order: [sorted_keys[i] for i in the
    result] == ranked_keys(sorted_keys, seed). The 16-byte ranks are sorted as two big-endian
    integers (numpy's stable lexsort: the same order as comparing the bytes, equal ranks in key
    order), and indices let a subset's sorted keys be picked out in one pass (subset_in_key_order)
    instead of sorting millions of strings again: a 4M-image source is ranked at every new launch."""
    ranks = np.frombuffer(b"".join(map(_ranker(seed), sorted_keys)), dtype=">u8").reshape(-1, 2)
    return np.lexsort((ranks[:, 1], ranks[:, 0]))


def subset_in_key_order(sorted_keys: list[str], indices: np.ndarray) -> list[str]:
    """The keys at `indices`, in key order (the order of `sorted_keys`)."""
    mask = np.zeros(len(sorted_keys), dtype=bool)
    mask[indices] = True
    return list(itertools.compress(sorted_keys, mask.tobytes()))


def keys_checksum(keys: list[str]) -> str:
    """sha256 of the manifest text: the sorted keys, one a line."""
    return hashlib.sha256(_manifest_text(keys).encode("utf-8")).hexdigest()


def _manifest_text(keys: list[str]) -> str:
    ordered = sorted(keys)  # (a list already in key order costs one pass)
    return "\n".join(ordered) + "\n" if ordered else ""


def write_manifest(keys: list[str], path: str | os.PathLike, **meta) -> str:
    """Write the keys (sorted) to `path` and `<path>.json` with size, checksum and `meta`; -> checksum."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    checksum = keys_checksum(keys)
    atomic.write_text(path, _manifest_text(keys))
    info = {"size": len(keys), "sha256": checksum, **meta}
    atomic.write_json(path.with_suffix(".json"), info, indent=2)
    return checksum


def read_manifest(path: str | os.PathLike) -> tuple[list[str], str]:
    """(keys, checksum) of a manifest written by `write_manifest`; checks it against its .json."""
    path = Path(path)
    keys = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln]
    checksum = keys_checksum(keys)
    meta = path.with_suffix(".json")
    if meta.is_file():
        want = json.loads(meta.read_text())
        if want.get("sha256") != checksum or want.get("size") != len(keys):
            raise ValueError(f"subset manifest {path} does not match {meta.name}: {len(keys)} keys, sha256 "
                             f"{checksum[:12]}.. vs size {want.get('size')}, sha256 {str(want.get('sha256'))[:12]}..")
    return keys, checksum


def manifest_name(n: int, seed: int) -> str:
    """The file name of subset(n, seed)'s manifest."""
    return f"subset-{n}-seed{seed}.txt"


def subset_manifest(items: Iterable[str | ImageRef], n: int, seed: int,
                    out_dir: str | os.PathLike) -> tuple[Path, str]:
    """Choose subset(n, seed) of `items` (keys or ImageRefs), write its manifest; -> (path, checksum)."""
    items = list(items)
    keys = subset_keys(items, n, seed)
    path = Path(out_dir) / manifest_name(n, seed)
    checksum = write_manifest(keys, path, seed=seed, total=len({_key(x) for x in items}))
    return path, checksum
