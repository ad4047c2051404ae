"""Dense downstream tasks: change detection (OSCD, LEVIR-CD folders), building segmentation
(SpaceNet v1, image/mask folders), by fine-tuning the pretrained encoder with a pyramid + head.

    run_dense(Path("run/encoder.pt"), DenseConfig(task="oscd", root=".../OSCD"), ModelConfig(...),
              out_dir=Path("run/eval"), device="cuda")
    -> {"oscd_f1": 52.1, "oscd_precision": ..., "oscd_recall": ..., "oscd_iou": ..., "oscd_miou": ...}
    -> {"spacenet_mf1": 78.0, "spacenet_miou": ..., ...}                 (percent, test split)

Details (per-epoch validation, best epoch, split sizes) go to out_dir/dense_<task>/report.json;
checkpoints (last.pt for resuming, best.pt = the best validation epoch) beside it.

CLI: python -m roma.eval.dense --task levir --root ../shared/data/levir_cd_samples --model roma_micro_tiny
"""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch

from roma import atomic
from roma.config import DENSE_TASK_KIND as TASKS, DenseConfig, ModelConfig
from roma.eval.checks import choice_problems, dense_problems, raise_problems

REPORTED = {"cd": ("f1", "precision", "recall", "iou", "miou", "mf1", "oa"), "seg": ("mf1", "miou", "oa", "iou_1", "f1_1")}


def validate(cfg: DenseConfig, patch_size: int | None = None) -> None:
    """Every value of cfg (roma.eval.checks, as validation checks a run), and a root to read."""
    raise_problems("DenseConfig", choice_problems(cfg))
    if not cfg.root:
        raise ValueError(f"DenseConfig.root is empty: give the {cfg.task} dataset folder")
    raise_problems("DenseConfig", dense_problems(cfg, patch_size))


def metric_keys(cfg: DenseConfig) -> list[str]:
    """The keys run_dense returns for cfg: <task>_<metric> of the test split."""
    return [f"{cfg.task}_{k}" for k in REPORTED[TASKS[cfg.task]]]


def build_model(encoder: torch.nn.Module, cfg: DenseConfig) -> torch.nn.Module:
    from roma.eval.dense.change_detection import SiameseChangeDetector
    from roma.eval.dense.segmentation import Segmenter

    if TASKS[cfg.task] == "cd":
        return SiameseChangeDetector(encoder, tuple(cfg.decoder_channels), num_classes=2)
    return Segmenter(encoder, cfg.head_channels, num_classes=2, aux_channels=max(cfg.head_channels // 2, 8))


def run_dense(encoder_ckpt: Path | None, dense_cfg: DenseConfig, model_cfg: ModelConfig, out_dir: Path,
              device: torch.device | str = "cpu") -> dict[str, float]:
    """Fine-tune encoder + head on the task's train split, select on val, return test metrics (percent)."""
    from roma.eval.dense.data import load_splits
    from roma.eval.dense.train import fit_and_test
    from roma.models.downstream import build_downstream_encoder, file_sha256

    cfg = dense_cfg
    validate(cfg, model_cfg.patch_size)
    torch.manual_seed(cfg.seed)
    splits = load_splits(cfg.task, Path(cfg.root), cfg.labels_root or None, cfg.val_fraction, cfg.test_fraction,
                         cfg.split_seed)
    encoder = build_downstream_encoder(Path(encoder_ckpt) if encoder_ckpt is not None else None, model_cfg.name,
                                       cfg.img_size, model_cfg.patch_size, scan=cfg.scan, readout="mean",
                                       seed=cfg.seed)
    model = build_model(encoder, cfg)
    task_dir = Path(out_dir) / f"dense_{cfg.task}"
    identity = {"model": model_cfg.name, "encoder_sha256": file_sha256(Path(encoder_ckpt)) if encoder_ckpt else "random-init"}
    report = fit_and_test(model, splits, cfg, task_dir, device, TASKS[cfg.task], identity)
    metrics = dict(zip(metric_keys(cfg), (report["test"][k] for k in REPORTED[TASKS[cfg.task]])))
    atomic.write_json(task_dir / "report.json", {
        "config": asdict(cfg), "model": model_cfg.name, "checkpoint": str(encoder_ckpt), **identity,
        "splits": {s: [sc.name for sc in v] for s, v in splits.items()}, "metrics": metrics, **report})
    return metrics


__all__ = ["run_dense", "build_model", "validate", "TASKS"]
