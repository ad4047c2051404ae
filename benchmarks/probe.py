"""Linear-probe speed: feature extraction images/s and head training time, extrapolated to AID.

    python benchmarks/probe.py                                   # micro encoder, 64 px, 512 AID images
    python benchmarks/probe.py --model roma_micro_base --img-size 96 --scan v3 --n 256 --threads 1 2
    python benchmarks/probe.py --synthetic /tmp/fake --device cuda ...   # no AID (e.g. a GPU machine)

Measured on a seeded subset of --n AID images (../shared/data/AID, or --root):
- decode: JPEG read + resize/centre-crop + normalise, images/s (one process, as num_workers=0);
- encoder: the frozen encoder's forward_pooled on pre-decoded batches, images/s, per thread count;
- end to end: the two in sequence (1 / (1/decode + 1/encoder)), and that rate extrapolated to the
  10,000 AID images (an estimate: printed as such);
- head: the fast protocol's lr/epoch selection + refit on random features of AID's TR-50% shape.
--synthetic DIR writes (once) and uses a learnable 30-class stand-in: 40 images of 150 px per
class, each class a colour and a stripe frequency/orientation under noise.
"""
from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from roma.eval.augment import EvalTransform
from roma.eval.features import ImageListDataset
from roma.eval.probe import select_and_fit
from roma.eval.splits import scan_folder
from roma.models.downstream import build_downstream_encoder

AID_IMAGES = 10_000
DEFAULT_ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "AID"


def make_synthetic(root: Path, classes: int = 30, per_class: int = 40, size: int = 150) -> None:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size]
    for c in range(classes):
        folder = root / f"class{c:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        base, freq, axis = rng.integers(40, 215, 3), 1 + c % 6, xx if c % 2 else yy
        for i in range(per_class):
            stripes = 40 * np.sin(2 * np.pi * freq * axis / size + rng.uniform(0, 2 * np.pi))
            img = base[None, None] + stripes[..., None] + rng.normal(0, 25, (size, size, 3))
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(folder / f"img{i}.jpg")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    p.add_argument("--model", default="roma_micro_tiny")
    p.add_argument("--img-size", type=int, default=64)
    p.add_argument("--scan", default="uni", choices=("uni", "v3"))
    p.add_argument("--readout", default="mean", choices=("mean", "cls"))
    p.add_argument("--n", type=int, default=512, help="images measured (the rest is extrapolated)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--device", default="cpu")
    p.add_argument("--head-epochs", type=int, default=100)
    p.add_argument("--synthetic", type=Path, default=None, help="write/use a synthetic dataset here")
    a = p.parse_args(argv)
    if a.synthetic is not None:
        if not a.synthetic.is_dir():
            make_synthetic(a.synthetic)
        a.root = a.synthetic
    if not a.root.is_dir():
        raise SystemExit(f"AID not found at {a.root} (give --root)")

    ds = scan_folder(a.root)
    idx = sorted(random.Random(0).sample(range(len(ds)), min(a.n, len(ds))))
    data = ImageListDataset(ds, idx, EvalTransform(a.img_size))
    t = time.perf_counter()
    x = torch.stack([data[k][0] for k in range(len(data))])
    decode = len(idx) / (time.perf_counter() - t)
    print(f"{len(idx)} images of {a.root}, {a.model} {a.scan}/{a.readout} at {a.img_size} px, batch {a.batch_size}, "
          f"device {a.device}")
    print(f"decode + transform: {decode:8.1f} img/s")

    enc = build_downstream_encoder(None, a.model, a.img_size, scan=a.scan, readout=a.readout).freeze().to(a.device)
    x = x.to(a.device)
    best = 0.0
    cuda = a.device.startswith("cuda")
    for threads in a.threads:
        torch.set_num_threads(threads)
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):  # as extraction
            enc.forward_pooled(x[: min(8, len(x))])  # warm-up
            if cuda:
                torch.cuda.synchronize()
            t = time.perf_counter()
            for i in range(0, len(x), a.batch_size):
                enc.forward_pooled(x[i:i + a.batch_size])
            if cuda:
                torch.cuda.synchronize()
        rate = len(x) / (time.perf_counter() - t)
        best = max(best, rate)
        print(f"encoder, {threads} thread(s): {rate:8.1f} img/s")
    e2e = 1.0 / (1.0 / decode + 1.0 / best)
    print(f"end to end (best threads): {e2e:8.1f} img/s -> estimated {AID_IMAGES / e2e:.0f} s "
          f"for all {AID_IMAGES} AID images (extrapolated from {len(idx)})")

    # head: AID TR-50% shapes (4,500 train, 500 val, 5,000 test), the default lr grid of 4 values
    g = torch.Generator().manual_seed(0)
    d = enc.embed_dim
    feats, labels = torch.randn(AID_IMAGES, d, generator=g), torch.randint(0, 30, (AID_IMAGES,), generator=g)
    t = time.perf_counter()
    select_and_fit(feats, labels, range(0, 4500), range(4500, 5000), range(5000, AID_IMAGES), 30,
                   lrs=[3e-4, 1e-3, 3e-3, 1e-2], epochs=a.head_epochs, batch_size=256, weight_decay=0.05, seed=0)
    print(f"head selection + refit ({a.head_epochs} epochs, 4 lrs, d={d}): {time.perf_counter() - t:.1f} s per seed")


if __name__ == "__main__":
    main()
