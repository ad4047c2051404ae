"""WebDataset-style tar shards: pack a folder or manifest into shards, and read them back.

    python -m roma.data.shards pack /data/aid /data/aid-shards --shard-size 1000
    pack("/data/aid", "/data/aid-shards", shard_size=1000)  # -> [shard-000000.tar, ...]

Layout (readable by the `webdataset` package): sample number i is two members,
`<i:09d>.<ext>` (the image bytes, unchanged) and `<i:09d>.path.txt` (its key: the path relative to
the packed folder or manifest). Keeping the key means a run on shards picks the same subset as a
run on the folder. Shards from elsewhere without `path.txt` are read too; their keys are then
`<shard file name>/<member name>`.

Reading: `index_shards` records each image's byte offset and size, so the map-style dataset reads
one image with a seek (no unpacking); `iter_shard` streams a shard in order.
"""
from __future__ import annotations

import argparse
import io
import os
import sys
import tarfile
from pathlib import Path
from typing import Iterator

from roma.progress import progress

from .sources import ImageRef, is_image, list_images, read_bytes

KEY_SUFFIX = ".path.txt"


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


def index_shard(path: str) -> list[ImageRef]:
    """The images of one shard, with their byte offsets (one pass over the tar headers)."""
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
    return [ImageRef(keys.get(s, f"{shard}/{m.name}"), path, m.offset_data, m.size) for s, m in images.items()]


def index_shards(paths: list[str]) -> list[ImageRef]:
    return [ref for p in paths for ref in index_shard(p)]


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


# ----------------------------------------------------------------------------- packing
def _add(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644  # fixed metadata: same input, same bytes
    tf.addfile(info, io.BytesIO(data))


def pack(src: str | os.PathLike, out_dir: str | os.PathLike, shard_size: int = 1000,
         prefix: str = "shard") -> list[Path]:
    """Pack the images of `src` (folder, manifest or shards), in key order, into `shard_size`-image shards.

    Image bytes are copied unchanged (no decoding: unreadable images are found, and counted, at
    training time). Each shard is written to a temporary file and renamed, so a killed pack never
    leaves a partial shard under its final name.
    """
    if shard_size < 1:
        raise ValueError(f"--shard-size must be >= 1, got {shard_size}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    existing = sorted(out.glob("*.tar"))
    if existing:
        raise FileExistsError(f"{out} already holds {len(existing)} .tar file(s) (e.g. {existing[0].name}): "
                              f"pack into an empty folder")
    refs = list_images(src)
    shards = []
    bar = progress(len(refs), "pack shards", unit="img")
    for s, start in enumerate(range(0, len(refs), shard_size)):
        final = out / f"{prefix}-{s:06d}.tar"
        tmp = out / f".{final.name}.tmp"
        with tarfile.open(tmp, mode="w", format=tarfile.PAX_FORMAT) as tf:
            for i, ref in enumerate(refs[start:start + shard_size], start):
                ext = Path(ref.key).suffix.lower() or ".jpg"
                _add(tf, f"{i:09d}{ext}", read_bytes(ref))
                _add(tf, f"{i:09d}{KEY_SUFFIX}", ref.key.encode("utf-8"))
                bar.update()
        os.replace(tmp, final)
        shards.append(final)
    bar.close()
    return shards


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m roma.data.shards", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack", help="pack a folder or manifest into WebDataset tar shards")
    p.add_argument("src", help="image folder, manifest (.txt/.csv/.parquet) or shards")
    p.add_argument("out", help="output folder (must hold no .tar files yet)")
    p.add_argument("--shard-size", type=int, default=1000, help="images per shard (default 1000)")
    p.add_argument("--prefix", default="shard", help="shard file name prefix (default 'shard')")
    c = sub.add_parser("count", help="count the images of a folder, manifest or shard pattern")
    c.add_argument("src")
    args = ap.parse_args(argv)
    if args.cmd == "pack":
        shards = pack(args.src, args.out, args.shard_size, args.prefix)
        n = sum(len(index_shard(str(s))) for s in shards)
        print(f"packed {n} images into {len(shards)} shard(s): {args.out}/{args.prefix}-"
              f"{{000000..{len(shards) - 1:06d}}}.tar")
    else:
        print(len(list_images(args.src)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
