"""Folder-per-class datasets (AID, UC Merced, ...) and stratified train / val / test split files.

A split of TR = r puts round(r * n_c) images of every class c into the training part and the rest
into the test part; a fraction `val_fraction` of each class's training part is held out as the
validation part, the only data used to choose hyper-parameters. Split files are JSON beside the
outputs, reused when present and rejected with a clear error when they no longer fit the data.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

from roma import atomic
from roma.data.refs import IMAGE_EXTS
from roma.data.walk import walk

SPLIT_VERSION = 1


@dataclass(frozen=True)
class FolderDataset:
    root: Path
    classes: tuple[str, ...]  # sorted class-folder names; a label is an index into it
    paths: tuple[str, ...]  # relative to root ("Airport/airport_1.jpg"), sorted
    labels: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def fingerprint(self) -> str:
        """sha256 of the (path, class) list: identifies the image set, not the bytes."""
        blob = "\n".join(f"{p}\t{self.classes[y]}" for p, y in zip(self.paths, self.labels))
        return hashlib.sha256(blob.encode()).hexdigest()


def scan_folder(root: Path) -> FolderDataset:
    """<root>/<class>/<image>: every sub-folder is a class, every image file below it a sample."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset root {root} is not a folder")
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if len(classes) < 2:
        raise ValueError(f"{root} must hold one sub-folder per class; found {len(classes)} class folder(s)")
    paths, labels = [], []
    for y, c in enumerate(classes):
        files = sorted(f.relative_to(root).as_posix() for f in walk(root / c, within=root).files
                       if f.suffix.lower() in IMAGE_EXTS)  # regular files; links into a sibling class not followed
        if not files:
            raise ValueError(f"class folder {root / c} holds no images ({', '.join(IMAGE_EXTS)})")
        paths += files
        labels += [y] * len(files)
    return FolderDataset(root, tuple(classes), tuple(paths), tuple(labels))


@dataclass(frozen=True)
class Split:
    train: tuple[int, ...]  # indices into the FolderDataset (train part minus val)
    val: tuple[int, ...]
    test: tuple[int, ...]
    train_ratio: float
    val_fraction: float
    seed: int
    path: Path | None = None

    @property
    def train_full(self) -> tuple[int, ...]:
        """train + val: the whole training part (refit after model selection)."""
        return tuple(sorted(self.train + self.val))


def split_filename(train_ratio: float, seed: int, val_fraction: float) -> str:
    return f"split_tr{round(train_ratio * 100)}_val{round(val_fraction * 100)}_seed{seed}.json"


def make_split(ds: FolderDataset, train_ratio: float, seed: int, val_fraction: float = 0.1) -> Split:
    """Stratified: every class contributes the same fractions (at least one train and one test image)."""
    if not 0.0 < train_ratio < 1.0:
        raise ValueError(f"train_ratio must be in (0, 1), got {train_ratio}")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    rng = random.Random(seed)
    by_class: dict[int, list[int]] = {}
    for i, y in enumerate(ds.labels):
        by_class.setdefault(y, []).append(i)
    train, val, test = [], [], []
    for y in sorted(by_class):
        idx = by_class[y][:]
        if len(idx) < 2:
            raise ValueError(f"class {ds.classes[y]!r} has {len(idx)} image(s); a split needs at least 2")
        rng.shuffle(idx)
        n_train = min(len(idx) - 1, max(1, round(train_ratio * len(idx))))
        n_val = min(n_train - 1, round(val_fraction * n_train)) if n_train > 1 else 0
        val += idx[:n_val]
        train += idx[n_val:n_train]
        test += idx[n_train:]
    return Split(tuple(sorted(train)), tuple(sorted(val)), tuple(sorted(test)), train_ratio, val_fraction, seed)


def save_split(split: Split, ds: FolderDataset, path: Path) -> None:
    doc = {
        "version": SPLIT_VERSION, "dataset": ds.root.name, "dataset_fingerprint": ds.fingerprint,
        "classes": list(ds.classes), "train_ratio": split.train_ratio, "val_fraction": split.val_fraction,
        "seed": split.seed,
        **{part: [ds.paths[i] for i in getattr(split, part)] for part in ("train", "val", "test")},
    }
    atomic.write_text(Path(path), json.dumps(doc, indent=1))


def load_split(path: Path, ds: FolderDataset, train_ratio: float | None = None, seed: int | None = None,
               val_fraction: float | None = None) -> Split:
    """Read a split file and check that it fits `ds` (and the requested ratio/seed when given)."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError (binary garbage)
        raise ValueError(f"split file {path} is not valid JSON: {e}") from None
    for key, want in (("train_ratio", train_ratio), ("seed", seed), ("val_fraction", val_fraction)):
        if key not in doc:
            raise ValueError(f"split file {path} lacks {key!r}")
        if want is not None and doc[key] != want:
            raise ValueError(f"split file {path} has {key}={doc[key]}, requested {want}")
    if doc.get("classes") != list(ds.classes):
        raise ValueError(f"split file {path} lists other classes than {ds.root}; delete it to rebuild")
    index = {p: i for i, p in enumerate(ds.paths)}
    parts = {}
    for part in ("train", "val", "test"):
        missing = [p for p in doc.get(part, []) if p not in index]
        if missing:
            raise ValueError(f"split file {path}: {len(missing)} {part} image(s) are not in {ds.root}, "
                             f"e.g. {missing[:3]}; delete the file to rebuild the split")
        parts[part] = tuple(sorted(index[p] for p in doc.get(part, [])))
    seen = parts["train"] + parts["val"] + parts["test"]
    if len(set(seen)) != len(seen):
        raise ValueError(f"split file {path}: the train/val/test parts overlap")
    if len(seen) != len(ds):
        raise ValueError(f"split file {path} covers {len(seen)} of the {len(ds)} images in {ds.root}; "
                         "delete it to rebuild the split")
    return Split(parts["train"], parts["val"], parts["test"], doc["train_ratio"], doc["val_fraction"],
                 doc["seed"], path)


def load_or_create_split(ds: FolderDataset, split_dir: Path, train_ratio: float, seed: int,
                         val_fraction: float = 0.1) -> Split:
    """The split file in split_dir for (ratio, seed, val_fraction): reused if present, else written."""
    path = Path(split_dir) / split_filename(train_ratio, seed, val_fraction)
    if path.exists():
        return load_split(path, ds, train_ratio, seed, val_fraction)
    split = make_split(ds, train_ratio, seed, val_fraction)
    save_split(split, ds, path)
    return Split(split.train, split.val, split.test, train_ratio, val_fraction, seed, path)


# ---------------------------------------------------------------- disjoint halves as link folders
HALVES_RATIO, HALVES_SEED = 0.5, 0  # the paper's TR = 50%, a fixed seed


def _link_tree(ds_root: Path, rel_paths: list[str], out: Path) -> None:
    """out/<rel path> -> ds_root/<rel path>, built in a temp folder then renamed (atomic per half)."""
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for rel in rel_paths:
        dst = tmp / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(ds_root / rel, dst)
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)


def _halves_up_to_date(out: Path, prefix: str, ds: FolderDataset, split_file: Path) -> bool:
    if not split_file.is_file():
        return False
    doc = json.loads(split_file.read_text())
    if doc.get("dataset_fingerprint") != ds.fingerprint or doc.get("source_root") != str(ds.root):
        return False
    for half, part in ((f"{prefix}_pool", "train"), (f"{prefix}_probe", "test")):
        n = sum(1 for p in (out / half).rglob("*") if p.is_symlink())
        if n != len(doc[part]):
            return False
    return True


def write_halves(root: Path, out: Path, prefix: str) -> dict:
    """Split a class-folder dataset into two disjoint stratified halves, as folders of symlinks.

        <out>/<prefix>_pool/<class>/<image>    pretraining pool (half of every class)
        <out>/<prefix>_probe/<class>/<image>   probe set (the other half; the probe splits it again)
        <out>/<prefix>_split.json              the split (relative paths of both halves, fingerprint)

    The TR = 50% split of make_split (seed 0, no validation part). Calling it again with the same
    data is a no-op; with other data it rebuilds the links. -> {"pool": n, "probe": n, "out": str}.
    """
    ds = scan_folder(Path(root).resolve())
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    split_file = out / f"{prefix}_split.json"
    if not _halves_up_to_date(out, prefix, ds, split_file):
        split = make_split(ds, HALVES_RATIO, HALVES_SEED, val_fraction=0.0)
        save_split(split, ds, split_file)
        load_split(split_file, ds, HALVES_RATIO, HALVES_SEED, 0.0)  # re-read: disjoint and complete
        doc = json.loads(split_file.read_text())
        doc["source_root"] = str(ds.root)
        atomic.write_text(split_file, json.dumps(doc, indent=1))
        _link_tree(ds.root, doc["train"], out / f"{prefix}_pool")
        _link_tree(ds.root, doc["test"], out / f"{prefix}_probe")
    doc = json.loads(split_file.read_text())
    if set(doc["train"]) & set(doc["test"]):
        raise RuntimeError(f"{split_file}: pool and probe halves overlap")
    return {"pool": len(doc["train"]), "probe": len(doc["test"]), "out": str(out)}
