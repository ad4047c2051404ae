"""MLflow metric keys: grouped by stage so the UI's chart view falls into sections (train, val, eval),
and the one mapping between them and the plain names the code and the analysis use.

    train/<name>   the training loop's step metrics (loss, loss_token, lr, images_per_s, grad_norm, ...)
                   and the pretraining's totals: train/final_loss, train/flops, train/flops_per_image,
                   train/device_hours (plain: final_loss, train_flops, pretrain_flops_per_image, device_hours)
    val/<name>     the held-out losses: val/loss, val/loss_token, ... (plain: val_loss, val_loss_token, ...)
    eval/<name>    the evaluations' metrics: eval/aid_oa_tr50, eval/oscd_f1, ... (plain: the same names)

Stores written before the grouping hold the plain names: plain_name() leaves those as they are, so
readers (analysis/runs.py, the loss-curve plot, a resumed run) accept both.
"""
from __future__ import annotations

GROUPS = ("train", "val", "eval")
VAL_PREFIX = "val_"  # roma.train.heldout's plain names
# the pretraining's totals whose plain name says more than its key in train/
TOTALS = {"final_loss": "train/final_loss", "train_flops": "train/flops",
          "pretrain_flops_per_image": "train/flops_per_image", "device_hours": "train/device_hours"}
_PLAIN_TOTALS = {v: k for k, v in TOTALS.items()}


def mlflow_key(name: str, stage: str = "train") -> str:
    """The MLflow key of a plain metric name; stage 'train' (pretraining) or 'eval' (an evaluation)."""
    if stage not in ("train", "eval"):
        raise ValueError(f"metric stage {stage!r}: expected 'train' or 'eval'")
    if "/" in name:
        raise ValueError(f"metric name {name!r} is already grouped")
    if stage == "eval":
        return f"eval/{name}"
    if name in TOTALS:
        return TOTALS[name]
    if name.startswith(VAL_PREFIX):
        return f"val/{name[len(VAL_PREFIX):]}"
    return f"train/{name}"


def plain_name(key: str) -> str:
    """The plain name of an MLflow key (the inverse of mlflow_key); an ungrouped key is plain already."""
    group, sep, rest = key.partition("/")
    if not sep or group not in GROUPS:
        return key
    if group == "val":
        return VAL_PREFIX + rest
    if group == "train":
        return _PLAIN_TOTALS.get(key, rest)
    return rest


def plain_metrics(metrics: dict[str, float]) -> dict[str, float]:
    """{MLflow key: value} of one run -> {plain name: value}; a grouped key wins over an old plain one."""
    out = {k: v for k, v in metrics.items() if "/" not in k}
    out.update({plain_name(k): v for k, v in metrics.items() if "/" in k})
    return out


def candidates(name: str, stage: str = "train") -> tuple[str, str]:
    """The keys a plain name may be stored under: grouped (current stores) first, then plain (older)."""
    return mlflow_key(name, stage), name
