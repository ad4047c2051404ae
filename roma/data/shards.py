"""Writing WebDataset-style tar shards and their index: pack a folder or manifest, index, verify.

    python -m roma.data.shards pack /data/pretrain /data/shards --shard-size 1000   # writes index.json too
    python -m roma.data.shards index /data/other-shards     # index shards packed elsewhere (reads each once)
    python -m roma.data.shards verify /data/shards          # re-hash every shard against the index

Order: `pack` writes the images in nested-subset rank order (`roma.data.subsets.rank` under
`--seed`, by default DataConfig.subset_seed), so subset(n) of that seed is the first n images:
a 62.5K run reads only the first shards, front to back, and every larger subset extends it.

The layout and the index format, and reading them back, are roma.data.shard_reader's.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import io
import os
import sys
import tarfile
from collections import Counter
from pathlib import Path

from roma import atomic
from roma.progress import progress

from .refs import read_bytes
from .shard_reader import INDEX_FORMAT, INDEX_NAME, KEY_SUFFIX, TABLE_NAME, Member, ShardEntry, read_index, scan_shard
from .sources import list_images
from .subsets import keys_checksum, rank


# ----------------------------------------------------------------------------- the index
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
    # pack writes *.tar, index.json and index.parquet: it never replaces such a file it did not write
    existing = sorted([*out.glob("*.tar"), *(out / n for n in (INDEX_NAME, TABLE_NAME) if (out / n).exists())])
    if existing:
        raise FileExistsError(f"{out} already holds {len(existing)} file(s) of the kind pack writes ("
                              + ", ".join(p.name for p in existing[:3]) + (", ..." if len(existing) > 3 else "")
                              + "): pack into a folder without shards or a shard index (nothing was written)")
    atomic.check_writable(out, "pack's output folder")
    out.mkdir(parents=True, exist_ok=True)
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
    try:
        return _run(args)
    except (FileExistsError, FileNotFoundError, PermissionError, ValueError) as e:  # named errors, no traceback
        print(f"shards {args.cmd}: {e}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
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
