"""WebDataset-style tar shards with an index: pack a folder or manifest into shards, and read them back.

    python -m roma.data.shards pack /data/pretrain /data/shards --shard-size 1000   # writes index.json too
    python -m roma.data.shards index /data/other-shards     # index shards packed elsewhere (reads each once)
    python -m roma.data.shards verify /data/shards          # re-hash every shard against the index

Layout (readable by the `webdataset` package): sample number i is two members,
`<i:09d>.<ext>` (the image bytes, unchanged) and `<i:09d>.path.txt` (its key: the path relative to
the packed folder or manifest). Keeping the key means a run on shards picks the same subset as a
run on the folder. Shards from elsewhere without `path.txt` are read too; their keys are then
`<shard file name>/<member name>`.

Order: `pack` writes the images in nested-subset rank order (`roma.data.subsets.rank` under
`--seed`, by default DataConfig.subset_seed), so subset(n) of that seed is the first n images:
a 62.5K run reads only the first shards, front to back, and every larger subset extends it.

Index: beside the shards, `index.json` (shard names, byte sizes, image counts, sha256 of each
shard, the rank seed the order follows, the sha256 of the sorted keys) and `index.parquet` (one
row per image in shard order: shard, member, key, offset, size). Reading a shard folder or pattern
uses it and opens no tar; a shard whose size differs from the index, a .tar the index does not
list, or a listed shard that is gone is an error naming the file (rebuild with `index`). Without
an index every tar's headers are read (one pass per shard). `iter_shard` streams one shard in order.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import hashlib
import io
import json
import os
import sys
import tarfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from roma import atomic
from roma.progress import progress

from .sources import ImageRef, is_image, list_images, read_bytes, read_slice, shard_files
from .subsets import check_subset_size, keys_checksum, rank

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


def _sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def rank_order(keys: list[str], seed: int) -> list[int]:
    """Positions of `keys` in subset-rank order of `seed` (ties, impossible in practice, by key)."""
    return sorted(range(len(keys)), key=lambda i: (rank(keys[i], seed), keys[i]))


def write_index(folder: str | os.PathLike, shards: list[ShardEntry], members: list[list[Member]],
                order_seed: int | None) -> Path:
    """Write index.parquet, then index.json (the commit point), each atomically; -> index.json."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = Path(folder)
    flat = [m for ms in members for m in ms]
    keys = [m.key for m in flat]
    if len(set(keys)) != len(keys):
        dup = next(k for k, c in Counter(keys).items() if c > 1)
        raise ValueError(f"image {dup!r} is stored twice in the shards of {folder}")
    table = pa.table({
        "shard": pa.array([i for i, ms in enumerate(members) for _ in ms], pa.int32()),
        "member": [m.member for m in flat],
        "key": keys,
        "offset": pa.array([m.offset for m in flat], pa.int64()),
        "size": pa.array([m.size for m in flat], pa.int64()),
    })
    buf = io.BytesIO()
    pq.write_table(table, buf)
    data = buf.getvalue()
    tmp = folder / f".{TABLE_NAME}.tmp"
    tmp.write_bytes(data)
    os.replace(tmp, folder / TABLE_NAME)
    order = {"by": "subset_rank", "seed": order_seed} if order_seed is not None else {"by": "other"}
    info = {"format": INDEX_FORMAT, "images": len(keys), "keys_sha256": keys_checksum(keys), "order": order,
            "table": TABLE_NAME, "table_sha256": hashlib.sha256(data).hexdigest(),
            "shards": [dataclasses.asdict(s) for s in shards]}
    atomic.write_json(folder / INDEX_NAME, info, indent=1)
    return folder / INDEX_NAME


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
    except json.JSONDecodeError as e:
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


def build_index(folder: str | os.PathLike, seed: int | None = None) -> Path:
    """Index the .tar shards of `folder` (in name order) by reading each once (headers + sha256). The
    order is recorded as subset-rank order of `seed` (default DataConfig.subset_seed) only when the
    images really are in that order."""
    from roma.config import DataConfig

    seed = DataConfig.subset_seed if seed is None else seed
    folder = Path(folder)
    tars = sorted(str(p) for p in folder.iterdir() if p.is_file() and p.name.endswith(".tar"))
    if not tars:
        raise FileNotFoundError(f"no .tar shards in {folder}")
    members = [scan_shard(t) for t in tars]
    entries = [ShardEntry(os.path.basename(t), os.path.getsize(t), len(m), _sha256_file(t))
               for t, m in zip(tars, members)]
    keys = [m.key for ms in members for m in ms]
    ranked = rank_order(keys, seed) == list(range(len(keys)))
    return write_index(folder, entries, members, seed if ranked else None)


def verify(folder: str | os.PathLike) -> list[str]:
    """Shards whose content differs from the index (re-hashes every shard); [] when all match."""
    index = read_index(folder)
    files = [os.path.join(index.folder, s.name) for s in index.shards]
    index.positions(files)  # existence and sizes first
    return [f for f, s in zip(files, index.shards) if _sha256_file(f) != s.sha256]


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


# ----------------------------------------------------------------------------- packing
def _add(tf: tarfile.TarFile, name: str, data: bytes) -> int:
    """Append one member; -> the byte offset of its data in the tar."""
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644  # fixed metadata: same input, same bytes
    tf.addfile(info, io.BytesIO(data))
    return tf.offset - -(-len(data) // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE  # data is padded to blocks


class _Hashing(io.RawIOBase):
    """A write-only file that hashes what passes through (the shard's sha256 without reading it back)."""

    def __init__(self, f):
        self.f, self.h, self.n = f, hashlib.sha256(), 0

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        self.h.update(b)
        self.n += len(b)
        return self.f.write(b)

    def tell(self) -> int:
        return self.n


def pack(src: str | os.PathLike, out_dir: str | os.PathLike, shard_size: int = 1000,
         prefix: str = "shard", seed: int | None = None) -> list[Path]:
    """Pack the images of `src` (folder, manifest or shards) into `shard_size`-image shards, in
    subset-rank order of `seed` (default DataConfig.subset_seed), and write the index.

    Image bytes are copied unchanged (no decoding: unreadable images are found, and counted, at
    training time). Each shard is written to a temporary file and renamed, and the index last, so
    a killed pack never leaves a partial shard under its final name nor an index of missing shards.
    """
    from roma.config import DataConfig

    seed = DataConfig.subset_seed if seed is None else seed
    if shard_size < 1:
        raise ValueError(f"--shard-size must be >= 1, got {shard_size}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    existing = sorted(out.glob("*.tar"))
    if existing:
        raise FileExistsError(f"{out} already holds {len(existing)} .tar file(s) (e.g. {existing[0].name}): "
                              f"pack into an empty folder")
    refs = list_images(src)
    refs = [refs[i] for i in rank_order([r.key for r in refs], seed)]
    shards, entries, members = [], [], []
    bar = progress(len(refs), "pack shards", unit="img")
    for s, start in enumerate(range(0, len(refs), shard_size)):
        final = out / f"{prefix}-{s:06d}.tar"
        tmp = out / f".{final.name}.tmp"
        written = []
        with open(tmp, "wb") as raw:
            sink = _Hashing(raw)
            with tarfile.open(fileobj=sink, mode="w", format=tarfile.PAX_FORMAT) as tf:
                for i, ref in enumerate(refs[start:start + shard_size], start):
                    ext = Path(ref.key).suffix.lower() or ".jpg"
                    data = read_bytes(ref)
                    written.append(Member(ref.key, f"{i:09d}{ext}", _add(tf, f"{i:09d}{ext}", data), len(data)))
                    _add(tf, f"{i:09d}{KEY_SUFFIX}", ref.key.encode("utf-8"))
                    bar.update()
        os.replace(tmp, final)
        shards.append(final)
        entries.append(ShardEntry(final.name, sink.n, len(written), sink.h.hexdigest()))
        members.append(written)
    bar.close()
    write_index(out, entries, members, seed)
    return shards


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m roma.data.shards", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack", help="pack a folder or manifest into WebDataset tar shards, with their index")
    p.add_argument("src", help="image folder, manifest (.txt/.csv/.parquet) or shards")
    p.add_argument("out", help="output folder (must hold no .tar files yet)")
    p.add_argument("--shard-size", type=int, default=1000, help="images per shard (default 1000)")
    p.add_argument("--prefix", default="shard", help="shard file name prefix (default 'shard')")
    p.add_argument("--seed", type=int, default=None,
                   help="order images by the nested-subset rank of this seed (default: data.subset_seed's default)")
    i = sub.add_parser("index", help="write the index of existing shards (reads every shard once)")
    i.add_argument("folder", help="folder of .tar shards")
    i.add_argument("--seed", type=int, default=None, help="the subset seed whose rank order to check for")
    v = sub.add_parser("verify", help="re-hash every shard and compare with the index")
    v.add_argument("folder")
    c = sub.add_parser("count", help="count the images of a folder, manifest or shard pattern")
    c.add_argument("src")
    args = ap.parse_args(argv)
    if args.cmd == "pack":
        shards = pack(args.src, args.out, args.shard_size, args.prefix, args.seed)
        index = read_index(args.out)
        print(f"packed {index.num_images} images into {len(shards)} shard(s), subset-rank order of seed "
              f"{index.order_seed}: {args.out}/{args.prefix}-{{000000..{len(shards) - 1:06d}}}.tar, "
              f"index {index.path}")
    elif args.cmd == "index":
        index = read_index(Path(build_index(args.folder, args.seed)).parent)
        order = (f"subset-rank order of seed {index.order_seed}" if index.order_seed is not None
                 else "not in subset-rank order (subsets rank every image at start)")
        print(f"indexed {index.num_images} images in {len(index.shards)} shard(s), {order}: {index.path}")
    elif args.cmd == "verify":
        bad = verify(args.folder)
        if bad:
            print(f"{len(bad)} shard(s) differ from {os.path.join(args.folder, INDEX_NAME)}: {', '.join(bad[:10])}",
                  file=sys.stderr)
            return 1
        print(f"all shards match {os.path.join(args.folder, INDEX_NAME)}")
    else:
        print(len(list_images(args.src)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
