"""Where pretraining images come from: a folder tree, a manifest, or WebDataset tar shards.

    refs = list_images("/data/aid")                 # folder, any depth
    refs = list_images("/data/aid/manifest.csv")    # .txt (one path a line) or .csv/.parquet `path` column
    refs = list_images("/data/shards/shard-{000000..000009}.tar")   # or a glob, or a folder of .tar
    data = read_bytes(refs[0])                      # the encoded image file (roma.data.refs)

A folder that holds .tar files at its top level is read as shards (from its `index.json` when
`roma.data.shards` wrote one: no tar is opened; reading shards is roma.data.shard_reader's);
any other folder as a tree.
Every image becomes an `ImageRef`. Its `key` is the image's stable identity (the path relative to
the folder or manifest, or the source path stored in a shard by `roma.data.shards.pack`), so the
same images listed three ways have the same keys, and subsets (which hash keys) pick the same ones.
Lists come back sorted by key, whatever the file-system walk order.
"""
from __future__ import annotations

import os
from pathlib import Path

from .refs import IMAGE_EXTS, ImageRef, is_image
from .shard_reader import index_shards, shard_files

MANIFEST_EXTS = (".txt", ".csv", ".parquet")


# ----------------------------------------------------------------------------- dispatch
def list_images(source: str | os.PathLike) -> list[ImageRef]:
    """All images of `source` (folder tree, manifest file, shard folder/glob/brace pattern), by key."""
    s = str(source)
    if not s:
        raise ValueError("data.root is empty: give a folder, a manifest (.txt/.csv/.parquet) or shards (*.tar)")
    p = Path(s)
    tars = shard_files(s)
    if tars:
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


def _check_unique(refs: list[ImageRef], source: str) -> None:
    seen: set[str] = set()
    for r in refs:
        if r.key in seen:
            raise ValueError(f"image {r.key!r} is listed twice in {source}")
        seen.add(r.key)


# ----------------------------------------------------------------------------- folders
def list_folder(root: str | os.PathLike, folders: list[str] | None = None) -> list[ImageRef]:
    """Images anywhere under `root` (extensions case-insensitive), as roma.data.walk lists them:
    regular files only, hidden ones skipped, each image once however folder links point.

    folders: if given, every folder walked is appended to it (roma.data.fingerprint stamps them)."""
    from .walk import walk

    root = Path(root)
    if not root.is_dir():
        raise NotADirectoryError(f"image folder {root} does not exist")
    w = walk(root)
    if folders is not None:
        folders.extend(w.folders)
    refs = [ImageRef(f.relative_to(root).as_posix(), str(f)) for f in w.files if is_image(f.name)]
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


def manifest_key(manifest: Path, entry: str) -> str:
    """The key of one manifest entry: the path as written (relative to the manifest's folder, or absolute)."""
    if not is_image(entry):
        raise ValueError(f"manifest {manifest} lists {entry!r}, which is not an image ({', '.join(IMAGE_EXTS)})")
    return Path(entry).as_posix()


def manifest_keys(manifest: str | os.PathLike) -> list[str]:
    """manifest_key of every entry, in manifest order, with no per-entry Path: a 4M-image manifest is
    listed at every launch that has not seen it (roma.data.fingerprint). Only entries that a Path
    would rewrite ('a//b', './a', 'a/./b') go through one."""
    m = Path(manifest)
    entries = manifest_paths(m)
    for e in (e for e in entries if not e.endswith(IMAGE_EXTS)):
        manifest_key(m, e)  # upper-case extensions pass; anything else raises, naming the entry
    text = "\n".join(entries)  # one scan of the whole text, not one test per entry
    if "//" in text or "./" in text:
        return [Path(e).as_posix() if "//" in e or "./" in e else e for e in entries]
    return entries


def list_manifest(manifest: str | os.PathLike) -> list[ImageRef]:
    """Images a manifest names; relative paths resolve against the manifest's folder (and are the keys)."""
    m = Path(manifest)
    base = m.parent
    refs = []
    for entry in manifest_paths(m):
        p = Path(manifest_key(m, entry))
        full = p if p.is_absolute() else base / p
        refs.append(ImageRef(p.as_posix(), str(full)))
    missing = [r.path for r in refs if not os.path.isfile(r.path)]
    if missing:
        raise FileNotFoundError(f"manifest {m}: {len(missing)} listed file(s) do not exist, e.g. {missing[:3]}")
    return sorted(refs, key=lambda r: r.key)
