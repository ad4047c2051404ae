"""What a run's pretraining data is, by content, not by path; cheap to know at every launch.

    fp = data_fingerprint("/scratch/pretrain", subset=62_500, seed=0, cache_dir=default_cache_dir())
    fp.total, fp.size, fp.checksum   # images in the source, images the run uses, sha256 of their manifest

`checksum` is roma.data.subsets.keys_checksum of the keys the run trains on: the nested subset's
manifest (size and seed pick it), or every key without a subset. Keys are paths relative to the
data root or manifest (or stored in the shards), so the same images under another absolute path, on
another cluster, give the same checksum, and other images under the same path do not. The run id
holds this checksum (RunConfig.identity), never the data root's path. Keys, not image bytes: a file
rewritten in place under the same name is the same data to the id.

Cost: listing 4M images and ranking them for a subset takes minutes on a network file system, so
results are cached per source, <cache_dir>/<sha256 of the absolute root>.json (counts and checksums,
a few kB, never the keys; cache_dir: roma.cache.cache_dir("data"), ~/.cache/roma/data by default),
and reused while a stamp that is cheap to re-check is unchanged:
  folder tree   the mtime of every folder in it (adding, removing or renaming an image changes its
                folder's mtime); re-checking is one stat per folder, no listing
  tar shards    name, size and mtime of every shard, and the bytes of the shard index (index.json, with
                each shard's sha256, from `python -m roma.data.shards pack/index`) where there is one;
                a full-data checksum is then read from the index (keys_sha256), not listed
  manifest      size and mtime of the manifest file
A different stamp means one new listing. Remove the cache folder to force it. Each entry carries
the sha256 of its own content: an entry that is not UTF-8 JSON, lacks a field, holds a value of
the wrong type or fails that checksum (a bit flip, a hand edit, a truncated copy) is rebuilt from a
new listing with a warning naming the file, never trusted and never a reason to fail.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import logging
import operator
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from roma import atomic
from roma.cache import cache_dir

from .shard_reader import expand_shard_pattern, is_shard_pattern
from .sources import MANIFEST_EXTS, list_folder, list_images, manifest_keys
from .subsets import keys_checksum, rank_order, subset_in_key_order

log = logging.getLogger(__name__)
SHARD_INDEX = "index.json"  # roma.data.shards' index (branch shards): {"format", "images", "keys_sha256", ...}
_CACHE_FORMAT = 2  # 2: entries carry their own sha256


@dataclass(frozen=True)
class Fingerprint:
    total: int  # images in the source
    size: int  # images the run uses (the subset size, or total)
    checksum: str  # sha256 of the sorted keys the run uses (its manifest)


# ----------------------------------------------------------------------------- stamps
def _mtime(path: str) -> int:
    return os.stat(path).st_mtime_ns


def _shard_files(src: str) -> list[str]:
    if is_shard_pattern(src):
        return expand_shard_pattern(src)
    return sorted(str(x) for x in Path(src).iterdir() if x.is_file() and x.name.endswith(".tar"))


def _shard_index(src: str) -> tuple[str | None, dict[str, Any] | None]:
    """(sha256 of index.json, its content) of a shard folder that has a valid index, else (None, None)."""
    f = Path(src) / SHARD_INDEX
    if is_shard_pattern(src) or not f.is_file():
        return None, None
    data = f.read_bytes()
    try:
        info = json.loads(data)
    except ValueError:  # not JSON or not UTF-8: no index (roma.data.shard_reader.read_index names the problem)
        return None, None
    ok = isinstance(info, dict) and isinstance(info.get("keys_sha256"), str) and isinstance(info.get("images"), int)
    return hashlib.sha256(data).hexdigest(), (info if ok else None)


def _kind(src: str) -> str:
    if is_shard_pattern(src):
        return "shards"
    p = Path(src)
    if p.is_dir():
        return "shards" if any(x.is_file() and x.name.endswith(".tar") for x in p.iterdir()) else "folder"
    if p.suffix.lower() in MANIFEST_EXTS:
        return "manifest"
    raise ValueError(f"data root {src} is neither a folder nor a manifest ({', '.join(MANIFEST_EXTS)}) nor a .tar shard")


def _cheap_stamp(src: str, kind: str, old: dict[str, Any] | None) -> dict[str, Any] | None:
    """The stamp of `src` now, computed without listing images; None for a folder seen for the first time
    (its stamp comes from the listing, see _listing)."""
    if kind == "shards":
        return {"kind": kind, "index": _shard_index(src)[0],
                "files": [[f, os.path.getsize(f), _mtime(f)] for f in _shard_files(src)]}
    if kind == "manifest":
        st = os.stat(src)
        return {"kind": kind, "size": st.st_size, "mtime": st.st_mtime_ns}
    if not old or old.get("kind") != "folder":
        return None
    try:
        return {"kind": kind, "dirs": {d: _mtime(os.path.join(src, d)) for d in old["dirs"]}}
    except OSError:  # a folder went away
        return None


def _listing(src: str, kind: str) -> tuple[list[str], dict[str, Any]]:
    """(sorted keys, stamp) by listing every image (the expensive path)."""
    if kind == "folder":
        dirs: list[str] = []
        keys = [r.key for r in list_folder(src, dirs)]
        stamp = {"kind": kind, "dirs": {os.path.relpath(d, src): _mtime(d) for d in dirs}}
        if not keys:
            raise ValueError(f"no images found in {src}")
        return keys, stamp
    stamp = _cheap_stamp(src, kind, None)
    if kind == "manifest":  # the keys as the job will list them; whether each file exists is the job's check
        m = Path(src)
        keys = sorted(manifest_keys(m))  # a manifest in key order (the usual) sorts in one pass
        if any(map(operator.eq, keys, itertools.islice(keys, 1, None))):  # an image listed twice
            keys = sorted(set(keys))
        if not keys:
            raise ValueError(f"no images listed in {src}")
        return keys, stamp
    return [r.key for r in list_images(src)], stamp


def source_keys(root: str | os.PathLike) -> tuple[str, str, list[str]]:
    """(kind: folder | manifest | shards, absolute root, sorted keys) by one listing, not cached: a
    manifest's entries whether or not each file exists yet (that is the job's check)."""
    src = _absolute(root)
    kind = _kind(src)
    return kind, src, _listing(src, kind)[0]


# ----------------------------------------------------------------------------- the cache
def _absolute(root: str | os.PathLike) -> str:
    return os.path.abspath(str(root))  # patterns too: only the folder part changes


def default_cache_dir() -> Path:
    return cache_dir("data")


def _cache_file(cache_dir: str | os.PathLike | None, src: str) -> Path | None:
    if cache_dir is None:
        return None
    return Path(cache_dir) / f"{hashlib.sha256(src.encode()).hexdigest()[:20]}.json"


def _entry_sha256(entry: dict[str, Any]) -> str:
    body = {k: v for k, v in entry.items() if k != "sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def _entry_problem(entry: Any, src: str) -> str | None:
    """Why a parsed cache entry cannot be trusted, or None."""
    if not isinstance(entry, dict):
        return f"holds a {type(entry).__name__}, not an entry"
    if entry.get("format") != _CACHE_FORMAT:
        return ""  # another version's entry: stale, not corrupt (rebuilt without a warning)
    checks = entry.get("checksums")
    if not (entry.get("root") == src and isinstance(entry.get("stamp"), (dict, type(None)))
            and (entry.get("total") is None or type(entry.get("total")) is int)
            and isinstance(checks, dict) and all(isinstance(v, str) and len(v) == 64 for v in checks.values())):
        return "fields missing or of the wrong type"
    if entry.get("sha256") != _entry_sha256(entry):
        return "its content does not match its sha256"
    return None


def _read_cache(path: Path | None, src: str) -> dict[str, Any] | None:
    """The trusted cache entry of `src`, or None (absent, stale, or corrupt: warned, rebuilt by the caller)."""
    if path is None:
        return None
    try:
        problem = _entry_problem(entry := atomic.read_json(path), src)
    except FileNotFoundError:
        return None
    except (OSError, atomic.CorruptFile) as e:
        problem, entry = str(getattr(e, "reason", e)), None
    if problem:
        log.warning("data-listing cache %s is corrupt (%s): listing the data again and rebuilding it", path, problem)
    return entry if problem is None else None


def _write_cache(path: Path, entry: dict[str, Any]) -> None:
    try:
        atomic.write_json(path, {**entry, "sha256": _entry_sha256(entry)})
    except OSError:  # a read-only home: no cache, same answer
        pass


# in-process: the keys of a source listed during this launch, and their rank orders per seed
_KEYS: dict[str, tuple[dict[str, Any], list[str]]] = {}
_RANKED: dict[tuple[str, int], Any] = {}  # (source, seed) -> indices into its sorted keys


def data_fingerprint(root: str | os.PathLike, subset: int | None = None, seed: int = 0,
                     cache_dir: str | os.PathLike | None = None, tail: bool = False) -> Fingerprint:
    """Size and checksum of the images a run with this data root, subset and seed trains on.

    tail=True: of the `subset` images of HIGHEST rank under `seed` instead (a held-out set drawn
    from the source, which no nested subset of at most total - subset images reaches).
    Raises FileNotFoundError / ValueError (as roma.data.sources does) for a missing or empty source,
    and ValueError when the subset is larger than the source."""
    src = _absolute(root)
    if not is_shard_pattern(src) and not os.path.exists(src):
        raise FileNotFoundError(f"data root {src} does not exist")
    kind = _kind(src)
    cache = _cache_file(cache_dir, src)
    entry = _read_cache(cache, src)
    stamp = _cheap_stamp(src, kind, entry.get("stamp") if entry else None)
    if entry is None or stamp is None or entry.get("stamp") != stamp:
        entry = {"format": _CACHE_FORMAT, "root": src, "stamp": stamp, "total": None, "checksums": {}}
    if kind == "shards" and entry["total"] is None:
        info = _shard_index(src)[1]
        if info is not None:
            entry["total"], entry["checksums"]["all"] = info["images"], info["keys_sha256"]
    want = "all" if subset is None else f"{'tail' if tail else ''}{subset}/{seed}"
    if entry["total"] is None or want not in entry["checksums"]:
        memo = _KEYS.get(src)
        if memo is None or stamp is None or memo[0] != stamp:
            keys, stamp = _listing(src, kind)
            memo = _KEYS[src] = (stamp, keys)
            for k in [k for k in _RANKED if k[0] == src]:
                del _RANKED[k]
            entry["checksums"] = {}
        stamp, keys = memo
        entry.update(stamp=stamp, total=len(keys))
        if "all" not in entry["checksums"]:
            entry["checksums"]["all"] = keys_checksum(keys)
        if subset is not None:
            if subset > len(keys):
                raise ValueError(f"data.subset asks for {subset} images but {src} holds only {len(keys)}")
            order = _RANKED.get((src, seed))
            if order is None:
                order = _RANKED[(src, seed)] = rank_order(keys, seed)
            picked = order[len(order) - subset:] if tail else order[:subset]
            entry["checksums"][want] = keys_checksum(subset_in_key_order(keys, picked))
        if cache is not None:
            _write_cache(cache, entry)
    total = int(entry["total"])
    if subset is not None and subset > total:
        raise ValueError(f"data.subset asks for {subset} images but {src} holds only {total}")
    return Fingerprint(total, total if subset is None else subset, entry["checksums"][want])
