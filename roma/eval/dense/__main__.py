"""python -m roma.eval.dense --task levir --root ../shared/data/levir_cd_samples --model roma_micro_tiny ..."""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import torch

from roma.config import CHOICES, DenseConfig, ModelConfig
from roma.eval.dense import run_dense


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Fine-tune a RoMA encoder on a dense task and report test metrics.")
    p.add_argument("--task", required=True, choices=CHOICES["eval.dense.task"])
    p.add_argument("--root", required=True)
    p.add_argument("--labels-root", default="", help="OSCD labels folder (default: --root)")
    p.add_argument("--ckpt", type=Path, default=None, help="encoder.pt (omit: random-init baseline)")
    p.add_argument("--model", default="roma_micro_tiny")
    p.add_argument("--model-img-size", type=int, default=None, help="pretraining resolution (default: registry)")
    p.add_argument("--out", type=Path, default=Path("outputs/dense"))
    p.add_argument("--img-size", type=int, default=256)
    p.add_argument("--crop-size", type=int, default=256)
    p.add_argument("--scan", default="v3", choices=("uni", "v3"))
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=6e-5)
    p.add_argument("--layer-decay", type=float, default=0.75)
    p.add_argument("--eval-every", type=int, default=5)
    p.add_argument("--decoder-channels", type=int, nargs=4, default=[512, 256, 128, 64])
    p.add_argument("--head-channels", type=int, default=512)
    p.add_argument("--num-workers", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = p.parse_args(argv)
    from roma.models.registry import get_model_size

    size = get_model_size(a.model)
    model_cfg = ModelConfig(name=a.model, img_size=a.model_img_size or size.img_size, patch_size=size.patch_size)
    cfg = replace(DenseConfig(), task=a.task, root=a.root, labels_root=a.labels_root, img_size=a.img_size,
                  crop_size=a.crop_size, scan=a.scan, epochs=a.epochs, max_steps=a.max_steps,
                  batch_size=a.batch_size, lr=a.lr, layer_decay=a.layer_decay, eval_every=a.eval_every,
                  decoder_channels=tuple(a.decoder_channels), head_channels=a.head_channels,
                  num_workers=a.num_workers, seed=a.seed)
    t = time.time()
    print(json.dumps(run_dense(a.ckpt, cfg, model_cfg, a.out, a.device), indent=1))
    print(f"[dense] done in {time.time() - t:.1f} s")


if __name__ == "__main__":
    main()
