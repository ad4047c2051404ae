"""Confusion-matrix metrics for dense prediction (mmseg / open-cd conventions, in percent).

    cm = ConfusionMatrix(2); cm.update(pred, target)        # (B, H, W) long tensors
    change_metrics(cm.matrix)  -> {"precision", "recall", "f1", "iou", "miou", "mf1", "oa"}
    seg_metrics(cm.matrix)     -> {"miou", "mf1", "oa", "iou_<c>", "f1_<c>"}

matrix[t, p] counts pixels of true class t predicted as p. A ratio whose denominator is zero
(a class absent from both prediction and truth) is NaN and left out of the means (nanmean), as
mmseg does; F1 is computed as 2tp / (2tp + fp + fn), so it is defined whenever the class appears
in either the prediction or the truth.
"""
from __future__ import annotations

import numpy as np
import torch

IGNORE_INDEX = 255


class ConfusionMatrix:
    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX):
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.matrix = np.zeros((num_classes, num_classes), dtype=np.int64)

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """pred, target: integer tensors of the same shape; target == ignore_index is skipped."""
        if pred.shape != target.shape:
            raise ValueError(f"prediction shape {tuple(pred.shape)} != target shape {tuple(target.shape)}")
        pred, target = pred.reshape(-1).long().cpu(), target.reshape(-1).long().cpu()
        keep = target != self.ignore_index
        pred, target = pred[keep], target[keep]
        bad = (target < 0) | (target >= self.num_classes) | (pred < 0) | (pred >= self.num_classes)
        if bad.any():
            raise ValueError(f"labels outside [0, {self.num_classes}) (ignore {self.ignore_index}) in update")
        k = self.num_classes
        self.matrix += torch.bincount(target * k + pred, minlength=k * k).reshape(k, k).numpy()


def _div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(b > 0, a / np.where(b > 0, b, 1), np.nan)


def per_class(matrix: np.ndarray) -> dict[str, np.ndarray]:
    """Per-class precision, recall, F1, IoU (fractions, NaN where undefined)."""
    m = np.asarray(matrix, dtype=np.float64)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"confusion matrix must be square, got shape {m.shape}")
    tp = np.diag(m)
    fp = m.sum(0) - tp  # predicted as c, truly another class
    fn = m.sum(1) - tp  # truly c, predicted as another class
    return {"precision": _div(tp, tp + fp), "recall": _div(tp, tp + fn),
            "f1": _div(2 * tp, 2 * tp + fp + fn), "iou": _div(tp, tp + fp + fn)}


def _pct(x) -> float:
    return float(100.0 * x)


def seg_metrics(matrix: np.ndarray) -> dict[str, float]:
    """mIoU, mF1 (means over classes present), overall accuracy, and per-class IoU / F1 (percent)."""
    pc = per_class(matrix)
    m = np.asarray(matrix, dtype=np.float64)
    out = {"miou": _pct(np.nanmean(pc["iou"])), "mf1": _pct(np.nanmean(pc["f1"])),
           "oa": _pct(_div(np.trace(m), m.sum()))}
    for c in range(m.shape[0]):
        out[f"iou_{c}"], out[f"f1_{c}"] = _pct(pc["iou"][c]), _pct(pc["f1"][c])
    return out


def change_metrics(matrix: np.ndarray, change_class: int = 1) -> dict[str, float]:
    """Precision, recall, F1 and IoU of the change class (the paper's OSCD F1), plus mIoU / mF1 / OA."""
    pc = per_class(matrix)
    seg = seg_metrics(matrix)
    return {"precision": _pct(pc["precision"][change_class]), "recall": _pct(pc["recall"][change_class]),
            "f1": _pct(pc["f1"][change_class]), "iou": _pct(pc["iou"][change_class]),
            "miou": seg["miou"], "mf1": seg["mf1"], "oa": seg["oa"]}
