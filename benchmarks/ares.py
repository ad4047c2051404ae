"""ARES speed: images/s per CPU core at 192 px, patch 16, per descriptor, and where the time goes.

    python benchmarks/ares.py                        # AID images from ../shared/data, else synthetic
    python benchmarks/ares.py --descriptors lbp --images 128 --repeats 7 --out /tmp/ares.json

Decode is excluded: images are decoded and resized to --size once, before any timing. One thread
(OMP/MKL/OpenBLAS/torch threads 1; ARES itself uses numpy and PIL only). Times are process CPU
time (time.process_time), i.e. per core, and each figure is the best of --repeats rounds over the
same images, so other work on a shared machine inflates them as little as possible.

Stages: gray (RGB -> luma), lbp codes (LBP over the whole image; lbp only), scoring (per-patch
score from the codes, or the whole hog/wavelet descriptor), search (top patch + region rule),
rotation (crop, rotate, paste; includes the output copy); other = end-to-end minus the stages
(input checks, RNG). "skimage LBP" is the reference cost of skimage.feature.local_binary_pattern
on the same images, which lbp codes reproduce bit for bit.
"""
from __future__ import annotations

import os

if __name__ == "__main__":  # before numpy is imported; not when a test imports this module
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
        os.environ[_var] = "1"

import argparse  # noqa: E402
import csv  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from roma import atomic  # noqa: E402
from roma.ares import Ares, grayscale, rotate_region  # noqa: E402
from roma.ares.descriptors import DESCRIPTORS, lbp_codes, lbp_entropy  # noqa: E402
from roma.config import AresConfig  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"


def load_images(n: int, size: int, seed: int) -> tuple[list[np.ndarray], str]:
    """n decoded (size, size, 3) uint8 images: AID (spread over the manifest) if present, else synthetic."""
    manifest = DATA / "AID_manifest.csv"
    if manifest.is_file():
        with open(manifest, newline="") as f:
            paths = [row["path"] for row in csv.DictReader(f)]
        picks = np.random.default_rng(seed).choice(len(paths), size=min(n, len(paths)), replace=False)
        imgs = [np.asarray(Image.open(DATA / paths[i]).convert("RGB").resize((size, size), Image.Resampling.BICUBIC))
                for i in sorted(picks)]
        return imgs, f"AID ({len(imgs)} images, resized to {size} px)"
    rng = np.random.default_rng(seed)
    imgs = []
    for _ in range(n):  # smooth random field + a few textured squares
        low = rng.integers(0, 256, (size // 16, size // 16, 3), dtype=np.uint8)
        img = np.array(Image.fromarray(low).resize((size, size), Image.Resampling.BILINEAR))
        for _ in range(3):
            s = int(rng.integers(8, size // 3))
            y, x = rng.integers(0, size - s, size=2)
            img[y:y + s, x:x + s] = rng.integers(0, 256, (s, s, 3), dtype=np.uint8)
        imgs.append(img)
    return imgs, f"synthetic ({n} images, {size} px; no AID at {DATA})"


def best_ms(fn, items, repeats: int) -> float:
    """Best over `repeats` rounds of the CPU ms per item of `fn(item)` over all items."""
    fn(items[0])  # warm caches and lazily built tables
    best = float("inf")
    for _ in range(repeats):
        t = time.process_time()
        for it in items:
            fn(it)
        best = min(best, time.process_time() - t)
    return best / len(items) * 1e3


def bench_descriptor(name: str, imgs, patch: int, repeats: int) -> dict:
    ares = Ares(AresConfig(descriptor=name), patch)
    grays = [grayscale(im) for im in imgs]
    scores = [ares.scores(g) for g in grays]
    rngs = np.random.default_rng(0)
    jobs = [(im, tuple(v * patch for v in ares.select_region(s)), ares.sample_angle(rngs))
            for im, s in zip(imgs, scores)]
    stages = {"gray": best_ms(grayscale, imgs, repeats)}
    if name == "lbp":
        codes = [lbp_codes(g) for g in grays]
        stages["lbp codes"] = best_ms(lbp_codes, grays, repeats)
        stages["scoring"] = best_ms(lambda c: lbp_entropy(c, patch), codes, repeats)
    else:
        stages["scoring"] = best_ms(lambda g: DESCRIPTORS[name](g, patch), grays, repeats)
    stages["search"] = best_ms(ares.select_region, scores, repeats)
    stages["rotation"] = best_ms(lambda job: rotate_region(*job), jobs, repeats)
    rng = np.random.default_rng(0)
    total = best_ms(lambda im: ares(im, rng), imgs, repeats)
    stages["other"] = max(total - sum(stages.values()), 0.0)
    sides = [box[2] // patch for _, box, _ in jobs]
    chosen = {s: sides.count(s) / len(sides) for s in ares.sizes}  # how often each region size wins
    return {"descriptor": name, "ms_per_image": total, "images_per_s_per_core": 1e3 / total,
            "stages_ms": stages, "region_size_share": chosen}


def write_json(path: Path, obj) -> None:
    atomic.write_json(path, obj, indent=2)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=192)
    ap.add_argument("--patch", type=int, default=16)
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--descriptors", nargs="+", default=list(DESCRIPTORS), choices=list(DESCRIPTORS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None, help="also write the results as JSON here")
    args = ap.parse_args(argv)
    imgs, source = load_images(args.images, args.size, args.seed)
    print(f"ARES at {args.size} px, patch {args.patch}, 1 thread, CPU time per image (best of {args.repeats})")
    print(f"images: {source}")
    results = [bench_descriptor(d, imgs, args.patch, args.repeats) for d in args.descriptors]
    for r in results:
        parts = "  ".join(f"{k} {v:.3f}" for k, v in r["stages_ms"].items())
        print(f"{r['descriptor']:8s} {r['images_per_s_per_core']:7.0f} images/s/core  {r['ms_per_image']:.3f} ms"
              f"  = {parts} (ms)")
        shares = ", ".join(f"{k}: {v:.0%}" for k, v in r["region_size_share"].items())
        print(f"{'':8s} region sizes chosen (patches): {shares}")
    if "lbp" in args.descriptors:
        from skimage.feature import local_binary_pattern

        padded = [np.pad(grayscale(im), 1, mode="edge") for im in imgs]
        ref = best_ms(lambda g: local_binary_pattern(g, 8, 1), padded, max(1, args.repeats // 2))
        ours = next(r for r in results if r["descriptor"] == "lbp")["stages_ms"]["lbp codes"]
        print(f"skimage LBP (reference, same codes): {ref:.3f} ms/image, {ref / ours:.1f}x the vectorised codes")
        results.append({"descriptor": "skimage_lbp_reference", "ms_per_image": ref})
    if args.out:
        write_json(args.out, {"size": args.size, "patch": args.patch, "images": source, "results": results})
    return 0


if __name__ == "__main__":
    try:  # ARES uses no torch, but a DataLoader worker has it loaded: one thread, as there
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass
    sys.exit(main())
