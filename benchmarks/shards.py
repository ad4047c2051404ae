"""Shards vs folder at scale: start-up time and images/s reading a nested subset.

    python benchmarks/shards.py                                   # 200K images, 62.5K subset, /tmp
    python benchmarks/shards.py --images 20000 --subset 5000 --work /tmp/x --json /tmp/shards.json

Generates --images tiny 32x32 JPEGs (distinct noise) as a folder tree under --work (never in the
repository; kept between runs, regenerated when the count differs), packs them with
`roma.data.shards.pack` (subset-rank order of seed 0, index written), and hard-links the same
tars into a second folder without an index (how shards were read before the index: one header
pass over every tar at start).

Start-up: `build_pretrain_dataset` with data.subset = --subset, what a run does before its first
step (list, choose the subset, write its manifest). Reading: every image of the subset read and
decoded to RGB (no augmentation, which costs the same either way), in a shuffled order (the
sampler's) for the folder and the map-style shard dataset (one open + seek per image), and in
shard order, one open per shard, as `shards.read_in_order` reads (the refs' sorting is outside the timing). The page cache is warm (the data were just written or read): these
figures are the per-image software cost, not a disk's. Ratios measured in one run.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def generate(folder: Path, n: int, size: int = 32) -> float:
    """n distinct JPEGs in 100 class folders; -> seconds. Reused when the folder already holds n."""
    from PIL import Image

    stamp = folder / ".count"
    if stamp.is_file() and stamp.read_text() == str(n):
        return 0.0
    shutil.rmtree(folder, ignore_errors=True)
    t0 = time.perf_counter()
    rng = np.random.default_rng(0)
    for c in range(100):
        (folder / f"class{c:03d}").mkdir(parents=True)
    base = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    for i in range(n):
        img = base.copy()
        img[i % size, :, :] = rng.integers(0, 256, (size, 3), dtype=np.uint8)  # distinct bytes, cheap
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG", quality=90)
        (folder / f"class{i % 100:03d}" / f"{i:07d}.jpg").write_bytes(buf.getvalue())
    stamp.write_text(str(n))
    return time.perf_counter() - t0


def prepare_shards(folder: Path, work: Path, n: int, shard_size: int) -> tuple[Path, Path, float]:
    from roma.data.shard_reader import read_index
    from roma.data.shards import pack

    shards, bare = work / f"shards-{shard_size}", work / f"shards-{shard_size}-noindex"
    pack_s = 0.0
    try:
        ok = read_index(shards).num_images == n
    except (OSError, ValueError):
        ok = False
    if not ok:
        shutil.rmtree(shards, ignore_errors=True)
        t0 = time.perf_counter()
        pack(folder, shards, shard_size=shard_size)
        pack_s = time.perf_counter() - t0
    shutil.rmtree(bare, ignore_errors=True)
    bare.mkdir()
    for t in sorted(shards.glob("*.tar")):
        os.link(t, bare / t.name)
    return shards, bare, pack_s


def startup(root: Path, subset: int, run_dir: Path):
    from roma.config import AresConfig, DataConfig, ModelConfig
    from roma.data import build_pretrain_dataset

    t0 = time.perf_counter()
    ds, info = build_pretrain_dataset(DataConfig(root=str(root), subset=subset), ModelConfig(img_size=32, patch_size=8),
                                      AresConfig(region_sizes=(1,)), run_dir, seed=0)
    return time.perf_counter() - t0, ds, info


def read_random(ds, decode: bool) -> float:
    """images/s reading (and decoding) every image of the dataset in a shuffled order."""
    from roma.data.dataset import decode_rgb
    from roma.data.refs import read_bytes

    order = np.random.default_rng(0).permutation(len(ds))
    t0 = time.perf_counter()
    for i in order:
        data = read_bytes(ds.refs[int(i)])
        if decode:
            decode_rgb(data)
    return len(order) / (time.perf_counter() - t0)


def read_stream(ds, decode: bool) -> float:
    """images/s streaming the subset's images shard by shard, front to back (one open per shard, as
    ShardStream reads), in the order pack wrote them."""
    from roma.data.dataset import decode_rgb
    from roma.data.shard_reader import read_in_order

    refs = sorted((ds.refs[i] for i in range(len(ds))), key=lambda r: (r.path, r.offset))
    by_shard: dict[str, list] = {}
    for r in refs:
        by_shard.setdefault(r.path, []).append(r)
    t0 = time.perf_counter()
    for shard_refs in by_shard.values():
        for data in read_in_order(shard_refs):
            if decode:
                decode_rgb(data)
    return len(refs) / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=200_000)
    p.add_argument("--subset", type=int, default=62_500)
    p.add_argument("--shard-size", type=int, default=1000)
    p.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "roma-shards-bench")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    if REPO in args.work.resolve().parents or args.work.resolve() == REPO:
        raise SystemExit(f"--work {args.work} is inside the repository: use a folder outside it (default /tmp)")
    folder = args.work / "folder"
    gen_s = generate(folder, args.images)
    shards, bare, pack_s = prepare_shards(folder, args.work, args.images, args.shard_size)
    n_shards = len(list(shards.glob("*.tar")))
    print(f"{args.images} images (32x32 JPEG), {n_shards} shards of {args.shard_size} under {args.work}"
          + (f"; generated in {gen_s:.0f} s" if gen_s else "") + (f"; packed in {pack_s:.0f} s" if pack_s else ""),
          flush=True)
    rows, datasets = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, root in (("folder", folder), ("shards, index", shards), ("shards, no index", bare)):
            secs, ds, info = startup(root, args.subset, Path(tmp) / name.replace(" ", "").replace(",", "-"))
            datasets[name] = ds
            files = len({ds.refs[i].path for i in range(len(ds))})
            rows.append({"source": name, "startup_s": secs, "checksum": info["checksum"], "files": files})
            print(f"start-up {name:<17} {secs:8.2f} s", flush=True)
    if len({r["checksum"] for r in rows}) != 1:
        raise RuntimeError("the three sources chose different subsets")
    ref_f, ref_s = datasets["folder"], datasets["shards, index"]
    for i in np.random.default_rng(1).choice(len(ref_f), 200, replace=False):  # same images, byte for byte
        from roma.data.refs import read_bytes

        if ref_f.refs.key(int(i)) != ref_s.refs.key(int(i)) or read_bytes(ref_f.refs[int(i)]) != read_bytes(ref_s.refs[int(i)]):
            raise RuntimeError(f"folder and shards differ at subset index {i}")
    reads = [("folder, shuffled", lambda d: read_random(ref_f, d)),
             ("shards, shuffled (map-style)", lambda d: read_random(ref_s, d)),
             ("shards, streamed in order", lambda d: read_stream(ref_s, d))]
    read_rows = []
    for name, fn in reads:
        fn(False)  # one pass to warm the page cache the same way for each
        read_rows.append({"read": name, "bytes_per_s": fn(False), "decoded_per_s": fn(True)})
    base = rows[0]["startup_s"]
    print(f"\nsubset of {args.subset} of {args.images} images (seed 0)")
    print(f"{'source':<20}{'start-up s':>11}{'vs folder':>11}{'files used':>12}")
    for r in rows:
        print(f"{r['source']:<20}{r['startup_s']:>11.2f}{r['startup_s'] / base:>10.2f}x{r['files']:>12}")
    fb, fd = read_rows[0]["bytes_per_s"], read_rows[0]["decoded_per_s"]
    print(f"\n{'read':<30}{'bytes img/s':>13}{'vs folder':>11}{'+decode img/s':>15}{'vs folder':>11}")
    for r in read_rows:
        print(f"{r['read']:<30}{r['bytes_per_s']:>13.0f}{r['bytes_per_s'] / fb:>10.2f}x"
              f"{r['decoded_per_s']:>15.0f}{r['decoded_per_s'] / fd:>10.2f}x")
    result = {"images": args.images, "subset": args.subset, "shard_size": args.shard_size, "shards": n_shards,
              "pack_s": pack_s or None, "startup": rows, "reading": read_rows}
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()
