"""The built-in spec bases: the paper's pretraining recipe and downstream suite, and the micro
runs for a laptop CPU. A spec names one with `base: paper` or `base: micro` (roma.spec composes them);
every value here is the paper's (../shared/docs/roma-reference.md, sections 5 and 6) unless its
comment says why not. The README lists each deviation as a documented choice.
"""
from __future__ import annotations

from typing import Any

from roma.config import EVAL_DATA_ENV


def _env(dataset: str) -> str:
    return "${" + EVAL_DATA_ENV[dataset] + "}"


# The released downstream protocols (roma-reference.md section 6), except that model selection uses a
# validation part of the training split, never the test split. Linear probe (6.1): the 4-direction
# (v3) encoder at 224 px reading the middle cls token (random and frozen, as released), BN + Linear
# head, 200 epochs, batch 128 x accum 4 = 512, blr 1.5e-3 (lr 3e-3), 5 warm-up epochs, cosine to 1e-6,
# wd 0.05, label smoothing 0.1, RandAugment + RandomErasing; one evaluation per training ratio.
PAPER_PROBE: dict[str, Any] = {"protocol": "full", "img_size": 224, "scan": "v3", "readout": "cls", "epochs": 200,
                               "batch_size": 512, "blr": 1.5e-3, "warmup_epochs": 5.0, "min_lr": 1e-6,
                               "weight_decay": 0.05, "label_smoothing": 0.1, "eval_every": 10}


# OSCD change detection (6.2): 96 px crops fed to the encoder at 768 px (48 x 48 tokens), UNet head
# [512, 256, 128, 64], AdamW lr 6e-5, wd 0.05, layer decay 0.75, 5 warm-up epochs, cosine over 100
# epochs, batch 4 x 8 GPUs = 32; change-class F1.
PAPER_OSCD: dict[str, Any] = {"task": "oscd", "img_size": 768, "crop_size": 96, "scan": "v3", "epochs": 100,
                              "batch_size": 32, "lr": 6e-5, "layer_decay": 0.75, "weight_decay": 0.05,
                              "warmup_epochs": 5.0, "decoder_channels": [512, 256, 128, 64], "eval_every": 5}


# SpaceNet v1 buildings (6.3): 384 px crops, UperNet (512) + FCN auxiliary head, AdamW lr 6e-5, wd 0.05,
# layer decay 0.9, 160k iterations at batch 2 x 4 GPUs = 8, ~1,500 warm-up iterations (3 epochs of
# the ~4.2K training tiles), sliding-window test 384 / stride 256; mF1.
PAPER_SPACENET: dict[str, Any] = {"task": "spacenet", "img_size": 384, "crop_size": 384, "scan": "v3", "epochs": 400,
                                  "max_steps": 160_000, "batch_size": 8, "lr": 6e-5, "layer_decay": 0.9,
                                  "weight_decay": 0.05, "warmup_epochs": 3.0, "head_channels": 512,
                                  "slide_stride": 256, "eval_every": 10}


# Built-in bases: plain override dicts on top of the RunConfig defaults.
BASES: dict[str, dict[str, Any]] = {
    "defaults": {},
    # The paper's recipe (roma-reference.md section 5; the RunConfig defaults, written out) and its
    # downstream suite (section 6); data roots come from the environment. Large: 300 epochs (scaling_model).
    "paper": {
        # held-out loss (val_loss): 512 images of the source that no nested subset reaches (roma.data.heldout).
        # The paper's largest point ("4M") is `data.subset: null`: the source less those 512, so it is valid
        # whatever the source's exact count (3,999,488 of 4,000,000; roma.data.heldout.largest_subset), and
        # its run name carries that size. nominal_total (OpticalRS-4M's 4,000,000; not in the run id) sizes
        # it in a dry run without the data; a launch counts the data (docs/data.md).
        "data": {"root": "${ROMA_PRETRAIN_DATA}", "heldout_size": 512, "nominal_total": 4_000_000},
        "train": {"global_batch": 256, "epochs": 400, "warmup_epochs": 40, "blr": 1.5e-4, "val_every_steps": 2000},
        "eval": {"probes": [PAPER_PROBE | {"dataset": "aid", "root": _env("aid"), "train_ratios": [0.2]},
                            PAPER_PROBE | {"dataset": "aid", "root": _env("aid"), "train_ratios": [0.5]},
                            PAPER_PROBE | {"dataset": "ucm", "root": _env("ucm"), "train_ratios": [0.5]}],
                 "dense": [PAPER_OSCD | {"root": _env("oscd")}, PAPER_SPACENET | {"root": _env("spacenet")}]},
    },
    # Laptop-CPU runs on the real AID images: micro model, a few hundred steps, fast AID probe.
    "micro": {
        "model": {"name": "roma_micro_tiny"},
        # our binned angle embedding (one vector per 11.25-degree bin), not the released single vector
        # (the paper base's default): every micro result (docs/micro_study.md) was measured with it
        "ares": {"angle_embed": "binned"},
        "data": {"root": "../shared/data/AID", "num_workers": 1},
        "train": {"epochs": 1000, "max_steps": 300, "global_batch": 32, "blr": 1.5e-3, "warmup_epochs": 0.5,
                  "ckpt_every_steps": 100, "log_every_steps": 10},
        # root "" = the pretraining data root (AID held-out half for the micro study)
        "eval": {"probes": [{"dataset": "aid", "root": "", "train_ratios": [0.5], "protocol": "fast",
                             "batch_size": 128}]},
    },
}
