"""The pretraining dataset, its collate, and the accounting of unreadable images.

    dataset, info = build_pretrain_dataset(cfg.data, cfg.model, cfg.ares, run_dir, seed)
    dataset.set_epoch(epoch)          # before building each epoch's DataLoader
    loader = DataLoader(dataset, batch_size, sampler=..., collate_fn=collate)
    batch = {"image": (B,3,H,W), "target": (B,3,H,W), "region": (B,3) long, "angle": (B,),
             "index": (B,) long, "bad": [dataset indices], "bad_paths": [str], "n_bad": int}

An unreadable or truncated image comes back as a `BadSample` (its index, file and error), never as
another image; `collate` drops it and reports it in "bad"/"bad_paths". `BadImageTracker` counts
them, lists them in bad_images.txt and fails the run past DataConfig.max_bad_fraction.

Randomness: sample `index` of epoch `epoch` draws from numpy's Generator seeded by (seed, epoch,
index), so crops, flips and ARES do not depend on the worker count or on the order of loading.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from roma import atomic
from roma.config import AresConfig, DataConfig, ModelConfig

from .decode import DECODE_ERRORS, BadImage, open_rgb
from .refs import ImageRef, read_bytes
from .shard_reader import subset_prefix
from .sources import list_images
from .subsets import keys_checksum, manifest_name, read_manifest, subset_keys, write_manifest
from .transforms import PretrainTransform

DECODE_ERRORS = (BadImage, *DECODE_ERRORS)  # open_rgb raises BadImage; reading a ref raises OSError


class BadSample(NamedTuple):
    index: int
    path: str  # where it was read (bad_images.txt shows it)
    error: str
    key: str = ""  # its identity (ImageRef.key): the same image under a moved data root


def sample_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The Generator of one sample: a function of (seed, epoch, index) only."""
    if min(seed, epoch, index) < 0:
        raise ValueError(f"seed, epoch and index must be >= 0, got {(seed, epoch, index)}")
    return np.random.default_rng([seed, epoch, index])


def decode_rgb(data: bytes) -> Image.Image:
    """Fully decode encoded image bytes as 8-bit RGB by roma.data.decode's rules (modes, pixel cap);
    BadImage for a broken or refused file (a truncated file raises here, not later)."""
    return open_rgb(data)


def load_rgb(ref: ImageRef) -> Image.Image:
    return decode_rgb(read_bytes(ref))


class RefTable:
    """ImageRefs packed in a few numpy arrays: millions of refs with no per-item Python objects, so
    DataLoader workers (forked) do not copy them page by page as reference counts change."""

    def __init__(self, refs: Sequence[ImageRef]):
        files: dict[str, int] = {}
        file_ids = [files.setdefault(r.path, len(files)) for r in refs]
        self._keys = _pack_strings([r.key for r in refs])
        self._files = _pack_strings(list(files))
        self._file_id = np.asarray(file_ids, dtype=np.int64)
        self._offset = np.asarray([r.offset for r in refs], dtype=np.int64)
        self._size = np.asarray([r.size for r in refs], dtype=np.int64)

    def __len__(self) -> int:
        return len(self._file_id)

    def key(self, i: int) -> str:
        return _get_string(self._keys, i)

    def __getitem__(self, i: int) -> ImageRef:
        if not -len(self) <= i < len(self):
            raise IndexError(f"image index {i} out of range for {len(self)} images")
        i = i % len(self)
        return ImageRef(self.key(i), _get_string(self._files, int(self._file_id[i])),
                        int(self._offset[i]), int(self._size[i]))


def _pack_strings(items: list[str]) -> tuple[np.ndarray, np.ndarray]:
    data = [s.encode("utf-8") for s in items]
    ends = np.cumsum([len(b) for b in data], dtype=np.int64)
    return np.frombuffer(b"".join(data), dtype=np.uint8).copy(), np.concatenate([[0], ends]).astype(np.int64)


def _get_string(table: tuple[np.ndarray, np.ndarray], i: int) -> str:
    blob, bounds = table
    return blob[bounds[i]:bounds[i + 1]].tobytes().decode("utf-8")


class PretrainDataset(Dataset):
    """Map-style dataset over image refs (files or shard members) -> augmented samples."""

    def __init__(self, refs: Sequence[ImageRef], transform: PretrainTransform, seed: int = 0):
        if not refs:
            raise ValueError("PretrainDataset needs at least one image")
        self.refs, self.transform, self.seed, self.epoch = RefTable(refs), transform, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.refs)

    def path(self, index: int) -> str:
        return str(self.refs[index])

    def __getitem__(self, index: int) -> dict[str, Any] | BadSample:
        ref = self.refs[index]
        try:
            img = load_rgb(ref)
        except DECODE_ERRORS as e:
            return BadSample(int(index), str(ref), f"{type(e).__name__}: {e}", ref.key)
        out = self.transform(img, sample_rng(self.seed, self.epoch, int(index)))
        out["index"] = int(index)
        return out


def collate(samples: list[dict[str, Any] | BadSample]) -> dict[str, Any]:
    """Stack the good samples; report the bad ones. Tensors are None when every sample was bad."""
    good = [s for s in samples if isinstance(s, dict)]
    bad = [s for s in samples if isinstance(s, BadSample)]
    if len(good) + len(bad) != len(samples):
        kinds = sorted({type(s).__name__ for s in samples if not isinstance(s, (dict, BadSample))})
        raise TypeError(f"collate got samples of type {kinds}; want dicts or BadSample")
    out: dict[str, Any] = {k: torch.stack([s[k] for s in good]) if good else None
                           for k in ("image", "target", "region", "angle")}
    out["index"] = torch.tensor([s["index"] for s in good], dtype=torch.long)
    out["bad"] = [b.index for b in bad]
    out["bad_paths"] = [b.path for b in bad]
    out["bad_keys"] = [b.key or b.path for b in bad]
    out["n_bad"] = len(bad)
    return out


class BadImageError(RuntimeError):
    pass


class BadImageTracker:
    """Counts unreadable images (each once, however many epochs), lists them, fails past a fraction.

    tracker.load_state_dict(state)  # a resumed run: what its checkpoint had found
    tracker.write_listing()         # at the start: `listing` = what the tracker holds, nothing found later
    tracker.update(batch)   # after each collated batch: appends new bad files to `listing`
    tracker.finish()        # at the end: the same test without the warm-up
    The fraction is distinct bad images / distinct images read (capped at `total`). It is tested once
    `min_seen` images were read (a 1% limit means little after one batch), and at once when the bad
    count alone already exceeds max_fraction x total.

    Exactly once across restarts: images are told apart by key (a moved data root changes paths, not
    keys). A run killed after its last checkpoint had appended lines that its resumed run finds
    again; write_listing() at the start drops them, so the list and `count` hold each image once.
    """

    def __init__(self, max_fraction: float, listing: str | os.PathLike | None = None,
                 total: int | None = None, min_seen: int = 1000):
        if not 0.0 <= max_fraction <= 1.0:
            raise ValueError(f"data.max_bad_fraction must be in [0, 1], got {max_fraction}")
        self.max_fraction, self.total, self.min_seen = max_fraction, total, min_seen
        self.listing = Path(listing) if listing is not None else None
        self.seen = 0
        self.bad: dict[str, str] = {}  # key -> path where it was read, in the order found

    @property
    def count(self) -> int:
        return len(self.bad)

    @property
    def basis(self) -> int:
        return min(self.seen, self.total) if self.total else self.seen

    @property
    def fraction(self) -> float:
        return self.count / self.basis if self.basis else 0.0

    def update(self, batch: dict[str, Any]) -> int:
        """Account one collated batch; -> number of newly found bad images. Raises BadImageError."""
        good = 0 if batch.get("image") is None else len(batch["image"])
        return self.add(good + batch["n_bad"], batch["bad_paths"], batch.get("bad_keys"))

    def add(self, seen: int, bad_paths: Sequence[str], keys: Sequence[str] | None = None) -> int:
        """Account `seen` images read, of which `bad_paths` (identified by `keys`, default the paths) failed."""
        self.seen += seen
        keys = list(bad_paths) if keys is None else list(keys)
        new = {k: p for k, p in zip(keys, bad_paths) if k not in self.bad}
        self.bad.update(new)
        if new and self.listing is not None:
            self.listing.parent.mkdir(parents=True, exist_ok=True)
            with open(self.listing, "a", encoding="utf-8") as f:
                f.writelines(f"{p}\n" for p in new.values())
        self.check()
        return len(new)

    def write_listing(self) -> None:
        """Make `listing` hold exactly the images found so far (atomically; an empty list removes it)."""
        if self.listing is None:
            return
        if self.bad:
            atomic.write_text(self.listing, "".join(f"{p}\n" for p in self.bad.values()))
        else:
            self.listing.unlink(missing_ok=True)

    def check(self, final: bool = False) -> None:
        hopeless = self.total is not None and self.count > self.max_fraction * self.total
        warm = final or self.basis >= self.min_seen
        if hopeless or (warm and self.fraction > self.max_fraction):
            where = f"; the list is in {self.listing}" if self.listing is not None else ""
            basis = self.total if hopeless else self.basis
            raise BadImageError(f"{self.count} of {basis} images are unreadable "
                                f"({self.count / basis:.2%} > data.max_bad_fraction {self.max_fraction:.2%})"
                                f"{where}")

    def finish(self) -> None:
        self.check(final=True)

    def state_dict(self) -> dict[str, Any]:
        return {"seen": self.seen, "bad": list(self.bad), "paths": list(self.bad.values())}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.seen = int(state["seen"])
        paths = state.get("paths", state["bad"])  # checkpoints before keys were kept: paths only
        self.bad = dict(zip(state["bad"], paths))


def build_pretrain_dataset(data_cfg: DataConfig, model_cfg: ModelConfig, ares_cfg: AresConfig,
                           run_dir: str | os.PathLike, seed: int) -> tuple[PretrainDataset, dict[str, Any]]:
    """The run's dataset (its subset when data.subset is set) and what to log about it.

    info = {"data_size", "total", "checksum" (sha256 of the sorted keys), "manifest" (subset
    manifest path or None), "source"}. Data that no longer gives data_cfg.checksum (the run id's
    data part), or a resumed run whose source no longer yields the subset of its first start, fails
    here instead of training on different data.
    """
    manifest = None
    if data_cfg.subset is not None:
        n, sseed = data_cfg.subset, data_cfg.subset_seed
        prefix = subset_prefix(data_cfg.root, n, sseed)  # shards packed in this seed's order: read n rows
        if prefix is not None:
            refs, total = prefix
        else:
            refs = list_images(data_cfg.root)
            total = len(refs)
            chosen = set(subset_keys(refs, n, sseed))
            refs = [r for r in refs if r.key in chosen]
        keys = [r.key for r in refs]
        checksum = keys_checksum(keys)
        manifest = Path(run_dir) / manifest_name(n, sseed)
        if manifest.is_file():  # a resumed run: the data must still give the same subset
            old = read_manifest(manifest)[1]
            if old != checksum:
                raise ValueError(f"data at {data_cfg.root} changed since this run started: subset manifest "
                                 f"{manifest} has sha256 {old[:12]}.., the source now gives {checksum[:12]}..")
        write_manifest(keys, manifest, seed=sseed, total=total, source=str(data_cfg.root))
    else:
        refs = list_images(data_cfg.root)
        total, checksum = len(refs), keys_checksum([r.key for r in refs])
    if data_cfg.checksum and checksum != data_cfg.checksum:
        raise ValueError(f"data at {data_cfg.root} changed since this run was launched: the run's id holds data "
                         f"checksum {data_cfg.checksum[:12]}.., the data now gives {checksum[:12]}.. "
                         "(relaunch: other data is another run)")
    transform = PretrainTransform(model_cfg.img_size, model_cfg.patch_size, ares_cfg,
                                  crop_scale=tuple(data_cfg.crop_scale), hflip=data_cfg.hflip)
    info = {"data_size": len(refs), "total": total, "checksum": checksum,
            "manifest": str(manifest) if manifest is not None else None, "source": str(data_cfg.root)}
    return PretrainDataset(refs, transform, seed), info
