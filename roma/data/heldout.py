"""The held-out images of the pretraining objective: a fixed set that no training subset reaches.

    dataset, info = build_heldout_dataset(cfg.data, cfg.model)             # the job: val_loss inputs
    data_cfg, problems = with_heldout_checksum(cfg.data)                   # the launcher: id, checks

Where they come from (DataConfig.heldout_root):
  ""      the LAST heldout_size images of data.root in subset_seed's order (roma.data.subsets). A
          nested subset is the FIRST data.subset images of that order, so no subset of at most
          total - heldout_size images ever holds one (validation refuses a larger subset, and a
          run on all of data.root).
  a path  a source of its own (the micro study: the AID half that the pool leaves out): its first
          heldout_size images in HELDOUT_SEED's order. It must share no image with data.root, by
          key and, for image files, by the file each one resolves to (symlinked halves).
The held-out keys are in the run id by content (data.heldout_checksum), never by path. Their crops
and flips come from a fixed seed (HELDOUT_SEED, epoch 0), and they are built WITHOUT ARES whatever
the run's ares.* settings (no rotated region, target = input): every run, training seed, evaluation
step and ablation variant scores the same input and target tensors. Of the losses on them,
val_loss_token (the next-cluster token loss) is comparable across every run; val_loss adds
msp.weight x the MSP block loss for MSP runs, so it is comparable only between runs of one MSP
setting (roma.train.heldout).
"""
from __future__ import annotations

import dataclasses
import os
from functools import lru_cache

from roma.config import DataConfig, ModelConfig

from .refs import ImageRef
from .sources import list_images
from .subsets import keys_checksum, ranked_keys

HELDOUT_SEED = 0


def _refs(root: str) -> tuple[ImageRef, ...]:
    return tuple(list_images(root))


def _keys(root: str) -> tuple[ImageRef, ...]:
    """The keys of a source as the launcher sees them (roma.data.fingerprint: a manifest's entries
    whether or not each file exists yet, which is the job's check), as refs; files of a folder
    keep their paths, so that symlinked copies are recognised."""
    from .fingerprint import source_keys

    kind, src, keys = source_keys(root)
    return tuple(ImageRef(k, os.path.join(src, k) if kind == "folder" else "") for k in keys)


_listed = lru_cache(maxsize=8)(_keys)  # one listing per source and launch (validation checks every run)


def heldout_refs(d: DataConfig, refs_of=_refs) -> list[ImageRef]:
    """The held-out images of `d` (heldout_size of them), sorted by key."""
    n = d.heldout_size
    refs = refs_of(d.heldout_root or d.root)
    if n > len(refs):
        raise ValueError(f"data.heldout_size asks for {n} images but {d.heldout_root or d.root} holds only {len(refs)}")
    order = ranked_keys([r.key for r in refs], d.subset_seed if not d.heldout_root else HELDOUT_SEED)
    chosen = set(order[len(order) - n:] if not d.heldout_root else order[:n])
    return [r for r in refs if r.key in chosen]


@lru_cache(maxsize=8)
def _resolved(refs: tuple[ImageRef, ...]) -> frozenset[str]:
    """The files the image refs resolve to. Cached like the listings: validation checks every run of
    a spec against the same pool (a study of 90 runs resolved 5,000 symlinks 90 times)."""
    return frozenset(os.path.realpath(r.path) for r in refs if r.path and not r.in_shard)


def draws_from_source(d: DataConfig) -> bool:
    """Whether the held-out images are drawn from data.root itself (then they bound every subset)."""
    return d.heldout_size > 0 and not d.heldout_root


def largest_subset(d: DataConfig, total: int) -> int:
    """The largest nested subset of a source of `total` images: all of them, or, with the held-out set
    drawn from the source, all but its heldout_size images (the last ones in subset_seed's order). So
    the largest point of a study is valid whatever the source's exact count: on 4,000,000 images with
    512 held out it is 3,999,488. A spec's `data.subset: null` means this (roma.spec)."""
    if not draws_from_source(d):
        return total
    if total <= d.heldout_size:
        raise ValueError(f"data.heldout_size {d.heldout_size} held-out images leave nothing to train on in the "
                         f"{total} images of data.root {d.root}")
    return total - d.heldout_size


def _same_source_problems(d: DataConfig, total: int) -> list[str]:
    if d.subset is None:
        return [("data.heldout_size", f"{d.heldout_size} held-out images drawn from data.root {d.root} need "
                f"data.subset (at most {total - d.heldout_size} of its {total} images; a spec's data.subset: null "
                "is that largest subset); or give data.heldout_root")]
    if d.subset + d.heldout_size > total:
        return [("data.subset", f"{d.subset} training + {d.heldout_size} held-out images (data.heldout_size) exceed "
                f"the {total} images of data.root {d.root}: the largest subset would train on held-out "
                "images; lower one of them, or give data.heldout_root")]
    return []


def _overlap_problems(d: DataConfig, held: list[ImageRef], refs_of) -> list[str]:
    train = refs_of(d.root)
    shared = sorted({r.key for r in held} & {r.key for r in train})
    same_file = sorted(_resolved(tuple(held)) & _resolved(tuple(train)))
    if not (shared or same_file):
        return []
    return [("data.heldout_root", f"{d.heldout_root} and data.root {d.root} share {max(len(shared), len(same_file))} "
            f"image(s) (e.g. {', '.join((shared or same_file)[:3])}): a held-out image must never be trained on")]


def with_heldout_checksum(d: DataConfig, cache_dir=None, refs_of=_listed) -> tuple[DataConfig, list[tuple[str, str]]]:
    """`d` with heldout_checksum computed from its held-out images, and the (key, problem)s: held-out images a
    training subset could reach (sizes; images shared with data.root), or a pinned checksum the data
    no longer gives. Drawn from data.root, the fingerprint cache answers without a listing."""
    from .fingerprint import data_fingerprint

    if d.heldout_size == 0:
        return d, []
    src = d.heldout_root or d.root
    try:
        if not d.heldout_root:
            fp = data_fingerprint(d.root, None, d.subset_seed, cache_dir)
            if d.heldout_size > fp.total:
                raise ValueError(f"data.heldout_size asks for {d.heldout_size} images but {src} holds only {fp.total}")
            problems = _same_source_problems(d, fp.total)
            checksum = data_fingerprint(d.root, d.heldout_size, d.subset_seed, cache_dir, tail=True).checksum
        else:
            held = heldout_refs(d, refs_of)
            problems = _overlap_problems(d, held, refs_of)
            checksum = keys_checksum([r.key for r in held])
    except (OSError, ValueError) as e:
        return d, [("data.heldout_root" if d.heldout_root else "data.root", f"cannot list the held-out images of {src}: {e}")]
    if d.heldout_checksum and d.heldout_checksum != checksum:
        problems.append(("data.heldout_checksum", f"pinned to {d.heldout_checksum[:12]}.., but {src} gives "
                        f"{checksum[:12]}..: these are other held-out images"))
    return dataclasses.replace(d, heldout_checksum=checksum), problems


def build_heldout_dataset(d: DataConfig, model_cfg: ModelConfig):
    """(PretrainDataset of the held-out images with their fixed augmentation, info) or (None, {}) without
    them. No ARES (ares.* is not an argument): ablation variants score the same tensors. Fails when
    the images no longer give the run id's data.heldout_checksum."""
    from .dataset import PretrainDataset
    from .transforms import PretrainTransform

    if d.heldout_size == 0:
        return None, {}
    refs = heldout_refs(d)
    checksum = keys_checksum([r.key for r in refs])
    if d.heldout_checksum and checksum != d.heldout_checksum:
        raise ValueError(f"held-out data at {d.heldout_root or d.root} changed since this run was launched: the run's "
                         f"id holds {d.heldout_checksum[:12]}.., the data now gives {checksum[:12]}..")
    transform = PretrainTransform(model_cfg.img_size, model_cfg.patch_size, None,
                                  crop_scale=tuple(d.crop_scale), hflip=d.hflip)
    return PretrainDataset(refs, transform, HELDOUT_SEED), {"heldout_size": len(refs), "heldout_checksum": checksum}
