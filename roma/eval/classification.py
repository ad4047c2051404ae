"""Scene classification by linear probing a frozen encoder (AID, UC Merced, any class-folder set).

    run_probe(Path("run/encoder.pt"), ProbeConfig(dataset="aid", root=".../AID"), ModelConfig(...),
              out_dir=Path("run/eval"), device="cpu")
    -> {"aid_oa_tr50": 83.2, "aid_oa_tr50_std": 0.4}          (percent; std over probe seeds)

Protocols (ProbeConfig.protocol):
- "fast": pooled features of every image extracted once (cached under out_dir/features), then a
  BN + Linear head trained on the cache; lr (blr * batch / 256 times each ProbeConfig.lr_grid
  multiplier) and epoch count are chosen on the validation part, then the head is refit on
  train + val and tested once.
- "full": the paper's recipe (use img_size 224, epochs 200, batch_size 512, blr 1.5e-3): RandAugment
  rand-m9-mstd0.5-inc1 + RandomResizedCrop + flip + RandomErasing 0.25, AdamW (wd 0.05), 5 warm-up
  epochs, cosine to 1e-6, label smoothing 0.1; the head of the best-validation epoch is tested.
The test part is never used to choose anything. Seeds vary the head's init, data order and
augmentations; the split is fixed by split_seed. Per-seed details go to out_dir/probe_<dataset>.json.

CLI: python -m roma.eval.classification --root ../shared/data/AID --model roma_micro_tiny --img-size 64
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from roma import atomic
from roma.config import CHOICES, ModelConfig, ProbeConfig
from roma.eval.augment import RANDAUG_SOURCE, TrainTransform
from roma.eval.checks import choice_problems, probe_problems, raise_problems
from roma.eval.features import ImageListDataset, bad_rows, cache_key, cached_features, extract_features
from roma.eval.probe import fit_head_on_images, select_and_fit
from roma.eval.splits import FolderDataset, load_or_create_split, scan_folder
from roma.models.downstream import build_downstream_encoder, file_sha256

def metric_name(dataset: str, train_ratio: float) -> str:
    return f"{dataset}_oa_tr{round(train_ratio * 100)}"


def metric_keys(cfg: ProbeConfig) -> list[str]:
    """The keys run_probe returns for cfg: per training ratio the mean OA and its std over seeds."""
    return [k for r in cfg.train_ratios for k in (metric_name(cfg.dataset, r), metric_name(cfg.dataset, r) + "_std")]


def subsample(ds: FolderDataset, per_class: int, seed: int) -> FolderDataset:
    """A seeded subset of at most per_class images of every class (0: ds itself)."""
    if per_class <= 0:
        return ds
    rng = random.Random(seed)
    keep = []
    for y in range(len(ds.classes)):
        idx = [i for i, label in enumerate(ds.labels) if label == y]
        keep += sorted(rng.sample(idx, min(per_class, len(idx))))
    keep.sort()
    return FolderDataset(ds.root, ds.classes, tuple(ds.paths[i] for i in keep), tuple(ds.labels[i] for i in keep))


def drop_unreadable(ds: FolderDataset, feats: torch.Tensor, labels: torch.Tensor, max_fraction: float,
                    listing: Path) -> tuple[FolderDataset, torch.Tensor, torch.Tensor]:
    """The pretraining policy for evaluation images: unreadable ones are skipped, listed in `listing`
    and counted; more than `max_fraction` of them is an error (roma.data.BadImageError)."""
    from roma.data import BadImageTracker

    bad = bad_rows(feats)
    listing.unlink(missing_ok=True)
    tracker = BadImageTracker(max_fraction, listing if bad else None, total=len(ds))
    tracker.add(len(ds), [str(ds.root / ds.paths[i]) for i in bad])
    tracker.finish()
    if not bad:
        return ds, feats, labels
    print(f"[probe] skipped {len(bad)} unreadable image(s) of {len(ds)}; listed in {listing}", flush=True)
    keep = sorted(set(range(len(ds))) - set(bad))
    kept = FolderDataset(ds.root, ds.classes, tuple(ds.paths[i] for i in keep), tuple(ds.labels[i] for i in keep))
    idx = torch.as_tensor(keep, dtype=torch.long)
    return kept, feats[idx], labels[idx]


def _validate(cfg: ProbeConfig, patch_size: int | None = None) -> None:
    """Every value of cfg (roma.eval.checks, as validation checks a run), and a root to read."""
    if not cfg.root:
        raise ValueError("ProbeConfig.root is empty: give the class-folder dataset root (e.g. .../AID)")
    raise_problems("ProbeConfig", choice_problems(cfg) + probe_problems(cfg, patch_size))


def run_probe(encoder_ckpt: Path | None, probe_cfg: ProbeConfig, model_cfg: ModelConfig, out_dir: Path,
              device: torch.device | str = "cpu") -> dict[str, float]:
    """Linear-probe OA (percent) per training ratio: {"<dataset>_oa_tr<pct>": mean, "..._std": std}."""
    cfg, out_dir, device = probe_cfg, Path(out_dir), torch.device(device)
    _validate(cfg, model_cfg.patch_size)
    img_size = cfg.img_size or model_cfg.img_size
    ds = subsample(scan_folder(Path(cfg.root)), cfg.max_per_class, cfg.split_seed)
    encoder = build_downstream_encoder(encoder_ckpt, model_cfg.name, img_size, model_cfg.patch_size,
                                       scan=cfg.scan, readout=cfg.readout).freeze().to(device)
    ckpt_id = (file_sha256(Path(encoder_ckpt)) if encoder_ckpt is not None
               else f"random-init-seed0-patch{model_cfg.patch_size}")

    t0 = time.time()
    key = cache_key(ckpt_id, model_cfg.name, img_size, cfg.scan, cfg.readout, ds)
    feats, labels = cached_features(out_dir / "features", key, ds, lambda: extract_features(
        encoder, ds, img_size, device, cfg.extract_batch_size, cfg.num_workers))
    t_feat = time.time() - t0
    ds, feats, labels = drop_unreadable(ds, feats, labels, cfg.max_bad_fraction, out_dir / "bad_images.txt")

    metrics: dict[str, float] = {}
    report = {"config": asdict(cfg), "model": model_cfg.name, "checkpoint": str(encoder_ckpt),
              "checkpoint_sha256": ckpt_id, "img_size": img_size, "n_images": len(ds), "feature_seconds": round(t_feat, 2),
              "randaugment": RANDAUG_SOURCE if cfg.protocol != "fast" else None, "ratios": {}}  # full protocol only
    split_dir = out_dir / "splits" / f"{cfg.dataset}_{ds.fingerprint[:8]}"  # a subset is another dataset
    for ratio in cfg.train_ratios:
        split = load_or_create_split(ds, split_dir, ratio, cfg.split_seed, cfg.val_fraction)
        runs = []
        for seed in cfg.seeds:
            if cfg.protocol == "fast":
                res = _fast(cfg, feats.to(device), labels.to(device), split, len(ds.classes), seed)
            else:
                res = _full(cfg, encoder, ds, feats, labels, split, img_size, seed, device)
            runs.append({"seed": seed, **asdict(res)})
            print(f"[probe] {cfg.dataset} tr{round(ratio * 100)} seed {seed}: test {res.test_acc:.2f} "
                  f"(val {res.val_acc:.2f}, lr {res.lr:.2e}, epochs {res.epochs})", flush=True)
        accs = [r["test_acc"] for r in runs]
        name = metric_name(cfg.dataset, ratio)
        metrics[name] = statistics.fmean(accs)
        metrics[name + "_std"] = statistics.stdev(accs) if len(accs) > 1 else 0.0
        report["ratios"][name] = {"split_file": str(split.path), "n_train": len(split.train), "n_val": len(split.val),
                                  "n_test": len(split.test), "runs": runs}
    report["metrics"] = metrics
    atomic.write_json(out_dir / f"probe_{cfg.dataset}.json", report)
    return metrics


def _fast(cfg: ProbeConfig, feats, labels, split, n_classes: int, seed: int):
    base_lr = cfg.blr * cfg.batch_size / 256
    return select_and_fit(feats, labels, split.train, split.val, split.test, n_classes,
                          lrs=[base_lr * m for m in cfg.lr_grid], epochs=cfg.epochs, batch_size=cfg.batch_size,
                          weight_decay=cfg.weight_decay, seed=seed, warmup_epochs=cfg.warmup_epochs,
                          min_lr=cfg.min_lr, label_smoothing=cfg.label_smoothing, eval_every=cfg.eval_every)


def _full(cfg: ProbeConfig, encoder, ds, feats, labels, split, img_size: int, seed: int, device):
    train = ImageListDataset(ds, split.train, TrainTransform(img_size), seed=seed)
    g = torch.Generator().manual_seed(seed)
    loader = DataLoader(train, batch_size=cfg.batch_size, shuffle=True, generator=g, drop_last=False,
                        num_workers=cfg.num_workers, pin_memory=device.type == "cuda",
                        persistent_workers=cfg.num_workers > 0)
    va, te = (torch.as_tensor(list(i), dtype=torch.long) for i in (split.val, split.test))
    return fit_head_on_images(encoder, loader, feats[va], labels[va], feats[te], labels[te], len(ds.classes),
                              lr=cfg.blr * cfg.batch_size / 256, epochs=cfg.epochs, weight_decay=cfg.weight_decay,
                              seed=seed, device=device, warmup_epochs=cfg.warmup_epochs, min_lr=cfg.min_lr,
                              label_smoothing=cfg.label_smoothing, eval_every=cfg.eval_every)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Linear-probe a RoMA encoder on a class-folder dataset.")
    p.add_argument("--root", required=True, help="dataset root with one folder per class")
    p.add_argument("--ckpt", type=Path, default=None, help="encoder.pt (omit: random-init baseline)")
    p.add_argument("--model", default="roma_micro_tiny", help="a registry name, or vit_base_patch16")
    p.add_argument("--model-img-size", type=int, default=None, help="pretraining resolution (default: registry)")
    p.add_argument("--out", type=Path, default=Path("outputs/probe"))
    p.add_argument("--dataset", default="aid")
    p.add_argument("--protocol", default="fast", choices=CHOICES["eval.probes.protocol"])
    p.add_argument("--img-size", type=int, default=0)
    p.add_argument("--scan", default="uni", choices=("uni", "v3"))
    p.add_argument("--readout", default="mean", choices=("mean", "cls"))
    p.add_argument("--ratios", type=float, nargs="+", default=[0.5])
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--max-per-class", type=int, default=0)
    p.add_argument("--num-workers", type=int, default=0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = p.parse_args(argv)
    from roma.models.downstream import VIT_MODELS
    from roma.models.registry import get_model_size

    if a.model in VIT_MODELS:  # the ViT baseline: a timm/MAE checkpoint, 224 px by default
        model_cfg = ModelConfig(name=a.model, img_size=a.model_img_size or 224, patch_size=16)
    else:
        size = get_model_size(a.model)
        model_cfg = ModelConfig(name=a.model, img_size=a.model_img_size or size.img_size,
                                patch_size=size.patch_size, cluster_size=size.cluster_size)
    cfg = replace(ProbeConfig(), dataset=a.dataset, root=a.root, protocol=a.protocol, img_size=a.img_size,
                  scan=a.scan, readout=a.readout, train_ratios=tuple(a.ratios), seeds=tuple(a.seeds),
                  epochs=a.epochs, batch_size=a.batch_size, max_per_class=a.max_per_class,
                  num_workers=a.num_workers)
    t = time.time()
    print(json.dumps(run_probe(a.ckpt, cfg, model_cfg, a.out, a.device), indent=1))
    print(f"[probe] done in {time.time() - t:.1f} s")


if __name__ == "__main__":
    main()
