"""Reading WebDataset-style tar shards: shard patterns, tar headers, and the index beside them.

Layout (readable by the `webdataset` package): sample number i is two members,
`<i:09d>.<ext>` (the image bytes, unchanged) and `<i:09d>.path.txt` (its key: the path relative to
the packed folder or manifest). Keeping the key means a run on shards picks the same subset as a
run on the folder. Shards from elsewhere without `path.txt` are read too; their keys are then
`<shard file name>/<member name>`.

Index: beside the shards, `index.json` (shard names, byte sizes, image counts, sha256 of each
shard, the rank seed the order follows, the sha256 of the sorted keys) and `index.parquet` (one
row per image in shard order: shard, member, key, offset, size). Reading a shard folder or pattern
uses it and opens no tar; a shard whose size differs from the index, a .tar the index does not
list, or a listed shard that is gone is an error naming the file (rebuild with `index`). Without
an index every tar's headers are read (one pass per shard). `iter_shard` streams one shard in order.

Writing shards and their index (pack, index, verify) is roma.data.shards.
"""
from __future__ import annotations

import contextlib
import gc
import glob
import hashlib
import io
import json
import os
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from .refs import ImageRef, is_image, read_slice
from .subsets import check_subset_size

# ----------------------------------------------------------------------------- tar headers
KEY_SUFFIX = ".path.txt"


INDEX_NAME = "index.json"  # the commit point: written last, after index.parquet


TABLE_NAME = "index.parquet"


INDEX_FORMAT = "roma-shards/1"


def _split(name: str) -> tuple[str, str]:
    """WebDataset's rule: key = up to the first dot of the base name; the rest is the extension."""
    head, _, base = name.rpartition("/")
    stem, dot, ext = base.partition(".")
    return (f"{head}/{stem}" if head else stem), (dot + ext)


def _scan(path: str) -> Iterator[tuple[str, tarfile.TarInfo, tarfile.TarFile]]:
    try:
        with tarfile.open(path, mode="r:") as tf:
            for member in tf:
                if member.isfile():
                    yield member.name, member, tf
    except tarfile.ReadError as e:
        raise OSError(f"shard {path} is not a readable tar file: {e}") from e


@dataclass(frozen=True)
class Member:
    key: str
    member: str  # the image's member name inside the tar
    offset: int
    size: int


def scan_shard(path: str) -> list[Member]:
    """The images of one shard in tar order, with their byte offsets (one pass over the tar headers)."""
    images: dict[str, tarfile.TarInfo] = {}
    keys: dict[str, str] = {}
    for name, member, tf in _scan(path):
        sample, ext = _split(name)
        if ext == KEY_SUFFIX:
            keys[sample] = tf.extractfile(member).read().decode("utf-8").strip()
        elif is_image(ext):
            if sample in images:
                raise ValueError(f"shard {path}: sample {sample!r} holds two images "
                                 f"({images[sample].name}, {name})")
            images[sample] = member
    shard = os.path.basename(path)
    return [Member(keys.get(s, f"{shard}/{m.name}"), m.name, m.offset_data, m.size) for s, m in images.items()]


def index_shard(path: str) -> list[ImageRef]:
    """The images of one shard, read from its tar headers (no index file involved)."""
    return [ImageRef(m.key, path, m.offset, m.size) for m in scan_shard(path)]


def index_shards(paths: list[str], whole_folder: bool = False) -> list[ImageRef]:
    """The images of `paths`, in shard order: from each folder's index where it has one (no tar is
    opened; a stale index raises), else from the tar headers. `whole_folder`: `paths` are all the
    .tar files of their folder, so every shard the index lists must be among them."""
    by_folder: dict[str, list[str]] = {}
    for p in paths:
        by_folder.setdefault(os.path.dirname(p), []).append(p)
    of_file: dict[str, list[ImageRef]] = {}
    for folder, files in by_folder.items():
        if os.path.isfile(os.path.join(folder or ".", INDEX_NAME)):
            index = read_index(folder or ".")
            if whole_folder:
                index.check_complete(files)
            for f, refs in zip(files, index.refs_by_file(files)):
                of_file[f] = refs
        else:
            of_file.update((f, index_shard(f)) for f in files)
    return [ref for p in paths for ref in of_file[p]]


def iter_shard(path: str) -> Iterator[tuple[str, bytes]]:
    """(key, image bytes) in the shard's order, streaming: members of one sample are consecutive."""
    shard = os.path.basename(path)
    current, image, image_name, key = None, None, "", None
    for name, member, tf in _scan(path):
        sample, ext = _split(name)
        if sample != current:
            if image is not None:
                yield key or f"{shard}/{image_name}", image
            current, image, image_name, key = sample, None, "", None
        if ext == KEY_SUFFIX:
            key = tf.extractfile(member).read().decode("utf-8").strip()
        elif is_image(ext):
            image, image_name = tf.extractfile(member).read(), name
    if image is not None:
        yield key or f"{shard}/{image_name}", image


def read_in_order(refs: list[ImageRef]) -> Iterator[bytes]:
    """The bytes of `refs`, images of one shard in shard order (an index's or a header scan's), read
    with one open, front to back: the streaming read without parsing the tar again."""
    if not refs:
        return
    path = refs[0].path
    with open(path, "rb") as f:
        for ref in refs:
            if ref.path != path:
                raise ValueError(f"read_in_order reads one shard: got {path} and {ref.path}")
            yield read_slice(f, ref)


# ----------------------------------------------------------------------------- the index
class StaleIndexError(ValueError):
    """The index no longer describes the shards beside it."""


@dataclass(frozen=True)
class ShardEntry:
    name: str  # file name, in the index's folder
    bytes: int
    images: int
    sha256: str


@dataclass
class ShardIndex:
    """index.json + index.parquet of one folder. Rows are grouped by shard, in shard order, so shard
    p's images are rows start[p] .. start[p + 1] (columns are sliced, never scanned whole)."""

    folder: str
    shards: list[ShardEntry]
    order_seed: int | None  # rows follow subsets.rank under this seed (None: another order)
    keys_sha256: str  # sha256 of the sorted keys (subsets.keys_checksum): a full run's data_checksum
    table: Any  # a pyarrow.Table: shard (position in `shards`), member, key, offset, size
    start: list[int]

    @property
    def path(self) -> str:
        return os.path.join(self.folder, INDEX_NAME)

    @property
    def num_images(self) -> int:
        return self.start[-1]

    def stale(self, what: str) -> StaleIndexError:
        return StaleIndexError(f"shard index {self.path} is stale: {what}; rebuild it with "
                               f"`python -m roma.data.shards index {self.folder}`")

    def positions(self, files: list[str]) -> list[int]:
        """Positions in `shards` of `files` (all in this folder), each file's size checked (a stat, no read)."""
        where = {s.name: i for i, s in enumerate(self.shards)}
        out = []
        for f in files:
            i = where.get(os.path.basename(f))
            if i is None:
                raise self.stale(f"it does not list {f}")
            try:
                size = os.path.getsize(f)
            except FileNotFoundError:
                raise self.stale(f"shard {f} is listed but does not exist") from None
            if size != self.shards[i].bytes:
                raise self.stale(f"shard {f} has {size} bytes, the index says {self.shards[i].bytes}")
            out.append(i)
        return out

    def check_complete(self, files: list[str]) -> None:
        """`files` (a folder's .tar files) hold every listed shard."""
        present = {os.path.basename(f) for f in files}
        gone = [s.name for s in self.shards if s.name not in present]
        if gone:
            raise self.stale(f"{len(gone)} listed shard(s) do not exist, e.g. {os.path.join(self.folder, gone[0])}")

    def rows(self, p: int, limit: int | None = None) -> dict[str, list]:
        """Columns key, offset, size of shard p's images (the first `limit` of them)."""
        n = self.start[p + 1] - self.start[p] if limit is None else limit
        part = self.table.slice(self.start[p], n)
        return {c: part.column(c).to_pylist() for c in ("key", "offset", "size")}

    def refs_by_file(self, files: list[str], limit: int | None = None) -> list[list[ImageRef]]:
        """ImageRefs of the images of each of `files`, in shard order (the first `limit` in all)."""
        out: list[list[ImageRef]] = []
        count = 0
        with _gc_paused():
            for p, f in zip(self.positions(files), files):
                take = self.shards[p].images if limit is None else min(limit - count, self.shards[p].images)
                if take <= 0:
                    break
                r = self.rows(p, take)
                out.append([ImageRef(k, f, o, s) for k, o, s in zip(r["key"], r["offset"], r["size"])])
                count += take
        return out

    def refs(self, files: list[str], limit: int | None = None) -> list[ImageRef]:
        """ImageRefs of the images of `files`, in the files' order (the first `limit` of them)."""
        return [ref for refs in self.refs_by_file(files, limit) for ref in refs]


@contextlib.contextmanager
def _gc_paused():
    """No cyclic GC while millions of acyclic tuples are built (each collection would walk them all)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def read_index(folder: str | os.PathLike) -> ShardIndex:
    """The index of a shard folder (reads index.json and index.parquet, no tar); errors name the file."""
    import numpy as np
    import pyarrow.parquet as pq

    folder = str(folder)
    path = os.path.join(folder, INDEX_NAME)
    rebuild = f"rebuild it with `python -m roma.data.shards index {folder}`"
    try:
        info = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"no shard index {path}: write one with `python -m roma.data.shards index "
                                f"{folder}`") from None
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError (binary garbage)
        raise ValueError(f"shard index {path} is not valid JSON ({e}); {rebuild}") from e
    if not isinstance(info, dict) or info.get("format") != INDEX_FORMAT:
        got = info.get("format") if isinstance(info, dict) else type(info).__name__
        raise ValueError(f"shard index {path} has format {got!r}, expected {INDEX_FORMAT!r}; {rebuild}")
    table_path = os.path.join(folder, info["table"])
    try:
        data = Path(table_path).read_bytes()
    except FileNotFoundError:
        raise StaleIndexError(f"shard index {path} names {table_path}, which does not exist; {rebuild}") from None
    if hashlib.sha256(data).hexdigest() != info["table_sha256"]:
        raise StaleIndexError(f"shard index table {table_path} does not match {path} (sha256 differs); {rebuild}")
    table = pq.read_table(io.BytesIO(data))
    shards = [ShardEntry(**s) for s in info["shards"]]
    shard_col = table.column("shard").to_numpy()
    counts = np.bincount(shard_col, minlength=len(shards)) if len(shard_col) else np.zeros(len(shards), int)
    if (len(counts) != len(shards) or np.any(np.diff(shard_col) < 0)
            or any(int(c) != s.images for c, s in zip(counts, shards)) or table.num_rows != info["images"]):
        raise StaleIndexError(f"shard index {path}: its rows in {table_path} do not match its shard list; {rebuild}")
    order = info.get("order") or {}
    start = [0, *np.cumsum([s.images for s in shards]).tolist()]
    return ShardIndex(folder, shards, order.get("seed") if order.get("by") == "subset_rank" else None,
                      info["keys_sha256"], table, start)


def subset_prefix(source: str | os.PathLike, n: int, seed: int) -> tuple[list[ImageRef], int] | None:
    """(subset(n, seed) sorted by key, total) of an indexed shard set packed in `seed`'s rank order:
    its first n images, from the index alone (the shards past them are not even stat'ed). None
    when `source` is not such a set; the caller then ranks every image."""
    tars = shard_files(str(source)) if str(source) else None
    if not tars or len({os.path.dirname(t) for t in tars}) != 1:
        return None
    folder = os.path.dirname(tars[0]) or "."
    if not os.path.isfile(os.path.join(folder, INDEX_NAME)):
        return None
    index = read_index(folder)
    if index.order_seed != seed:
        return None
    if os.path.isdir(source):
        index.check_complete(tars)
    where = {s.name: i for i, s in enumerate(index.shards)}
    pos = [where.get(os.path.basename(t), -1) for t in tars]
    if -1 in pos or pos != sorted(pos):
        index.positions(tars)  # names the unlisted file
        return None  # shards taken out of index order: no prefix
    # any in-order selection of rank-ordered shards is itself rank-ordered: subset(n) is its first n
    total = sum(index.shards[p].images for p in pos)
    check_subset_size(n, total)
    needed, count = [], 0
    for t, p in zip(tars, pos):
        if count >= n:
            break
        needed.append(t)
        count += index.shards[p].images
    refs = index.refs(needed, limit=n)
    return sorted(refs, key=lambda r: r.key), total


# ----------------------------------------------------------------------------- shard patterns
_BRACE = re.compile(r"\{([^{}]*)\}")


def is_shard_pattern(s: str) -> bool:
    """A glob / brace pattern or a single .tar: a shard source (roma.validation and list_images ask this)."""
    return any(c in s for c in "*?[") or bool(_BRACE.search(s)) or s.endswith(".tar")


def expand_braces(pattern: str) -> list[str]:
    """'a-{000..002}.tar' -> [a-000.tar, a-001.tar, a-002.tar]; '{x,y}' -> alternatives; nests left to right."""
    m = _BRACE.search(pattern)
    if m is None:
        return [pattern]
    body, head, tail = m.group(1), pattern[: m.start()], pattern[m.end():]
    rng = re.fullmatch(r"(\d+)\.\.(\d+)", body)
    if rng:
        lo, hi = rng.group(1), rng.group(2)
        if int(hi) < int(lo):
            raise ValueError(f"shard pattern {pattern!r}: range {{{body}}} runs backwards")
        width = len(lo) if lo.startswith("0") else 0
        options = [str(i).zfill(width) for i in range(int(lo), int(hi) + 1)]
    elif "," in body:
        options = body.split(",")
    else:
        raise ValueError(f"shard pattern {pattern!r}: cannot expand {{{body}}} (use {{000..009}} or {{a,b}})")
    return [x for opt in options for x in expand_braces(head + opt + tail)]


def expand_shard_pattern(pattern: str) -> list[str]:
    """Brace pattern (every file must exist), glob, or one .tar -> sorted shard files."""
    files: list[str] = []
    missing: list[str] = []
    for p in expand_braces(pattern):
        if any(c in p for c in "*?["):
            files.extend(glob.glob(p))
        else:
            (files if os.path.isfile(p) else missing).append(p)
    if missing:
        raise FileNotFoundError(f"{len(missing)} shard(s) of pattern {pattern!r} do not exist, e.g. {missing[:3]}")
    files = sorted(set(files))
    if not files:
        raise FileNotFoundError(f"no shard files match {pattern!r}")
    not_tar = [f for f in files if not f.endswith(".tar")]
    if not_tar:
        raise ValueError(f"shard pattern {pattern!r} matches non-.tar files, e.g. {not_tar[:3]}")
    return files


def shard_files(source: str) -> list[str] | None:
    """The .tar shards `source` names (a pattern, one .tar, a folder with .tar files at its top), or None."""
    if is_shard_pattern(source):
        return expand_shard_pattern(source)
    p = Path(source)
    if p.is_dir():
        return sorted(str(x) for x in p.iterdir() if x.is_file() and x.name.endswith(".tar")) or None
    return None
