"""Image loading and frozen-feature extraction, cached on disk.

The cache holds the pooled features of *every* image of a dataset under the eval transform, so one
extraction serves every split (TR 20%, TR 50%) and seed. Its key hashes what the features depend
on: the checkpoint bytes (or the random-init seed), the model name, image size, scan, readout,
transform, and the dataset's (path, class) list.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import random
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from roma import atomic, torchfile
from roma.data.decode import BadImage, open_rgb
from roma.eval.augment import EVAL_CROP_PCT, EvalTransform
from roma.eval.splits import FolderDataset
from roma.progress import progress

CACHE_VERSION = 1


class ImageListDataset(Dataset):
    """Images of a FolderDataset at `indices`; transform(img, rng) -> (3, H, W).

    The rng of sample i in epoch e is seeded by (seed, epoch, i): augmentations are reproducible
    whatever the number of workers.
    """

    def __init__(self, ds: FolderDataset, indices, transform, seed: int = 0, skip_bad: bool = False):
        self.ds, self.indices, self.transform, self.seed = ds, list(indices), transform, seed
        self.skip_bad = skip_bad  # an unreadable image gives (None, label) instead of an error
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int):
        i = self.indices[k]
        path = self.ds.root / self.ds.paths[i]
        try:
            img = open_rgb(path)  # roma.data.decode: modes, pixel cap; every decode error is BadImage
        except (BadImage, OSError) as e:
            if self.skip_bad:
                return None, self.ds.labels[i]
            raise RuntimeError(f"cannot read image {path}: {e}") from e
        rng = random.Random(hash((self.seed, self.epoch, i)))
        return self.transform(img, rng), self.ds.labels[i]


def _collate_marking_bad(items):
    """(images of the readable items or None, labels of all, readable mask)."""
    ok = torch.tensor([x is not None for x, _ in items])
    xs = [x for x, _ in items if x is not None]
    return (torch.stack(xs) if xs else None), torch.tensor([y for _, y in items]), ok


@torch.inference_mode()
def extract_features(encoder, ds: FolderDataset, img_size: int, device: torch.device | str = "cpu",
                     batch_size: int = 128, num_workers: int = 0, indices=None, log_every_s: float = 30.0):
    """Pooled features (N, d) float32 on CPU and labels (N,) of ds[indices] (all images by default).

    The row of an unreadable image is NaN (see bad_rows): the caller applies the bad-image policy."""
    device = torch.device(device)
    indices = range(len(ds)) if indices is None else indices
    loader = DataLoader(ImageListDataset(ds, indices, EvalTransform(img_size), skip_bad=True), batch_size=batch_size,
                        num_workers=num_workers, pin_memory=device.type == "cuda", collate_fn=_collate_marking_bad)
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()
    parts, labels = [], []
    encoder.eval()
    with progress(len(loader.dataset), "probe features", unit="img", every_s=log_every_s) as bar:
        for x, y, ok in loader:
            f = None
            if x is not None:
                with amp:
                    f = encoder.forward_pooled(x.to(device, non_blocking=True)).float().cpu()
            parts.append((f, ok))
            labels.append(y)
            bar.update(len(y))
    dim = next((f.shape[1] for f, _ in parts if f is not None), None)
    if dim is None:
        raise RuntimeError(f"none of the {len(loader.dataset)} images under {ds.root} could be read")
    feats = []
    for f, ok in parts:
        rows = torch.full((len(ok), dim), float("nan"))
        if f is not None:
            rows[ok] = f
        feats.append(rows)
    return torch.cat(feats), torch.cat(labels).long()


def bad_rows(feats: torch.Tensor) -> list[int]:
    """Rows of extract_features' output whose image could not be read."""
    return torch.isnan(feats).any(dim=1).nonzero().flatten().tolist()


def cache_key(ckpt_id: str, model_name: str, img_size: int, scan: str, readout: str, ds: FolderDataset) -> str:
    blob = json.dumps({"v": CACHE_VERSION, "ckpt": ckpt_id, "model": model_name, "img": img_size, "scan": scan,
                       "readout": readout, "transform": f"resize-center-crop-{EVAL_CROP_PCT}",
                       "data": ds.fingerprint}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def cached_features(cache_dir: Path, key: str, ds: FolderDataset, compute) -> tuple[torch.Tensor, torch.Tensor]:
    """Load <cache_dir>/<key>.pt if it matches ds, else call compute() -> (feats, labels) and store it."""
    path = Path(cache_dir) / f"feats_{key}.pt"
    if path.exists():
        try:
            blob = torchfile.load(path)
        except torchfile.UnreadableCheckpoint as e:  # a cache: rebuilt, never a reason to fail
            print(f"[probe] feature cache unreadable, rebuilding it: {e}", flush=True)
            blob = {}
        ok = isinstance(blob, dict) and isinstance(blob.get("features"), torch.Tensor)
        if ok and blob.get("fingerprint") == ds.fingerprint and blob["features"].shape[0] == len(ds):
            return blob["features"], blob["labels"]
        if blob:
            print(f"[probe] ignoring stale feature cache {path}", flush=True)
    feats, labels = compute()
    if feats.shape[0] != len(ds) or not torch.equal(labels, torch.tensor(ds.labels)):
        raise RuntimeError("feature extraction returned rows that do not match the dataset order")
    with atomic.replacing(path) as tmp, open(tmp, "wb") as f:
        torch.save({"features": feats, "labels": labels, "fingerprint": ds.fingerprint, "paths": list(ds.paths)}, f)
    return feats, labels
