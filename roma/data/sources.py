"""Where pretraining images come from: a folder tree, a manifest, or WebDataset tar shards.

    refs = list_images("/data/aid")                 # folder, any depth
    refs = list_images("/data/aid/manifest.csv")    # .txt (one path a line) or .csv/.parquet `path` column
    refs = list_images("/data/shards/shard-{000000..000009}.tar")   # or a glob, or a folder of .tar
    data = read_bytes(refs[0])                      # the encoded image file

A folder that holds .tar files at its top level is read as shards (from its `index.json` when
`roma.data.shards` wrote one: no tar is opened); any other folder as a tree.
Every image becomes an `ImageRef`. Its `key` is the image's stable identity (the path relative to
the folder or manifest, or the source path stored in a shard by `roma.data.shards.pack`), so the
same images listed three ways have the same keys, and subsets (which hash keys) pick the same ones.
Lists come back sorted by key, whatever the file-system walk order.
"""
from __future__ import annotations

import glob
import os
import re
from pathlib import Path
from typing import NamedTuple

# the one list of image extensions: pretraining sources, launch-time checks, evaluation folders
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp")
MANIFEST_EXTS = (".txt", ".csv", ".parquet")


class ImageRef(NamedTuple):  # a tuple, not a dataclass: millions are built at start, 20x cheaper
    key: str  # identity: relative path (folder/manifest) or the path stored in the shard
    path: str  # the file to open: the image itself, or the .tar shard holding it
    offset: int = -1  # byte offset of the image's data inside the shard; -1: `path` is the image
    size: int = -1  # bytes of the image's data inside the shard

    @property
    def in_shard(self) -> bool:
        return self.offset >= 0

    def __str__(self) -> str:  # what bad_images.txt shows
        return f"{self.path}:{self.key}" if self.in_shard else self.path


def is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTS)


def read_bytes(ref: ImageRef) -> bytes:
    """The encoded image bytes of `ref` (a plain file, or a slice of a tar shard)."""
    with open(ref.path, "rb") as f:
        return read_slice(f, ref) if ref.in_shard else f.read()


def read_slice(f, ref: ImageRef) -> bytes:
    """The bytes of a shard member from the shard's open file `f`."""
    f.seek(ref.offset)
    data = f.read(ref.size)
    if len(data) != ref.size:
        raise OSError(f"shard {ref.path} is truncated: {ref.key} wants {ref.size} bytes at {ref.offset}, "
                      f"got {len(data)}")
    return data


# ----------------------------------------------------------------------------- dispatch
def list_images(source: str | os.PathLike) -> list[ImageRef]:
    """All images of `source` (folder tree, manifest file, shard folder/glob/brace pattern), by key."""
    s = str(source)
    if not s:
        raise ValueError("data.root is empty: give a folder, a manifest (.txt/.csv/.parquet) or shards (*.tar)")
    p = Path(s)
    tars = shard_files(s)
    if tars:
        from .shards import index_shards

        refs = index_shards(tars, whole_folder=p.is_dir())
    elif p.is_dir():
        refs = list_folder(p)
    elif p.suffix.lower() in MANIFEST_EXTS:
        refs = list_manifest(p)
    elif p.exists():
        raise ValueError(f"data.root {s} is neither a folder nor a manifest ({', '.join(MANIFEST_EXTS)}) "
                         f"nor a .tar shard")
    else:
        raise FileNotFoundError(f"data.root {s} does not exist")
    if not refs:
        raise ValueError(f"no images ({', '.join(IMAGE_EXTS)}) found in {s}")
    _check_unique(refs, s)
    return sorted(refs, key=lambda r: r.key)


def shard_files(source: str) -> list[str] | None:
    """The .tar shards `source` names (a pattern, one .tar, a folder with .tar files at its top), or None."""
    if is_shard_pattern(source):
        return expand_shard_pattern(source)
    p = Path(source)
    if p.is_dir():
        return sorted(str(x) for x in p.iterdir() if x.is_file() and x.name.endswith(".tar")) or None
    return None


def _check_unique(refs: list[ImageRef], source: str) -> None:
    seen: set[str] = set()
    for r in refs:
        if r.key in seen:
            raise ValueError(f"image {r.key!r} is listed twice in {source}")
        seen.add(r.key)


# ----------------------------------------------------------------------------- folders
def list_folder(root: str | os.PathLike) -> list[ImageRef]:
    """Images anywhere under `root` (extensions case-insensitive; hidden folders skipped)."""
    root = Path(root)
    if not root.is_dir():
        raise NotADirectoryError(f"image folder {root} does not exist")
    refs = []
    visited: set[str] = set()  # real paths: symlinked folders are followed, symlink loops are not
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        visited.add(os.path.realpath(dirpath))
        dirnames[:] = [d for d in dirnames if not d.startswith(".")
                       and os.path.realpath(os.path.join(dirpath, d)) not in visited]
        for name in filenames:
            if is_image(name) and not name.startswith("."):
                full = Path(dirpath) / name
                refs.append(ImageRef(full.relative_to(root).as_posix(), str(full)))
    return sorted(refs, key=lambda r: r.key)


# ----------------------------------------------------------------------------- manifests
def manifest_paths(manifest: str | os.PathLike) -> list[str]:
    """The raw path entries of a manifest: .txt (one a line, # comments), .csv/.parquet (`path` column)."""
    m = Path(manifest)
    if not m.is_file():
        raise FileNotFoundError(f"manifest {m} does not exist")
    ext = m.suffix.lower()
    if ext == ".txt":
        lines = (ln.strip() for ln in m.read_text(encoding="utf-8").splitlines())
        return [ln for ln in lines if ln and not ln.startswith("#")]
    import pandas as pd

    df = pd.read_csv(m, dtype=str, keep_default_na=False) if ext == ".csv" else pd.read_parquet(m)
    if "path" not in df.columns:
        raise ValueError(f"manifest {m} has no `path` column (columns: {list(df.columns)})")
    col = df["path"]
    if col.isna().any() or (col.astype(str).str.strip() == "").any():
        raise ValueError(f"manifest {m} has empty `path` entries")
    return [str(v).strip() for v in col]


def list_manifest(manifest: str | os.PathLike) -> list[ImageRef]:
    """Images a manifest names; relative paths resolve against the manifest's folder (and are the keys)."""
    m = Path(manifest)
    base = m.parent
    refs = []
    for entry in manifest_paths(m):
        if not is_image(entry):
            raise ValueError(f"manifest {m} lists {entry!r}, which is not an image ({', '.join(IMAGE_EXTS)})")
        p = Path(entry)
        full = p if p.is_absolute() else base / p
        refs.append(ImageRef(p.as_posix(), str(full)))
    missing = [r.path for r in refs if not os.path.isfile(r.path)]
    if missing:
        raise FileNotFoundError(f"manifest {m}: {len(missing)} listed file(s) do not exist, e.g. {missing[:3]}")
    return sorted(refs, key=lambda r: r.key)


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
