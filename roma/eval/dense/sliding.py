"""Sliding-window inference over images larger than a training crop (mmseg's "slide" mode).

    logits = sliding_window(lambda a, b: model(a, b), (img_a, img_b), window=256, stride=128, num_classes=2)

Windows of `window` px start every `stride` px, the last one flush with the border so every pixel is
covered; images smaller than a window are zero-padded on the bottom/right (zero is the dataset mean
after normalisation) and the padding is cut off again. Overlapping logits are averaged.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F


def window_starts(size: int, window: int, stride: int) -> list[int]:
    if window < 1 or stride < 1:
        raise ValueError(f"window and stride must be >= 1, got {window}, {stride}")
    if size <= window:
        return [0]
    starts = list(range(0, size - window + 1, stride))
    if starts[-1] != size - window:
        starts.append(size - window)
    return starts


@torch.no_grad()
def sliding_window(fn: Callable[..., torch.Tensor], inputs: tuple[torch.Tensor, ...], window: int, stride: int,
                   num_classes: int, window_batch: int = 8) -> torch.Tensor:
    """fn(*crops) maps (n, C, window, window) inputs to (n, num_classes, window, window) logits;
    inputs share (B, C, H, W) -> averaged logits (B, num_classes, H, W) in float32.
    Up to `window_batch` windows go through fn together (one call per group, not per window)."""
    b, _, h, w = inputs[0].shape
    if any(t.shape[0] != b or t.shape[-2:] != inputs[0].shape[-2:] for t in inputs):
        raise ValueError(f"sliding_window inputs differ in batch or size: {[tuple(t.shape) for t in inputs]}")
    ph, pw = max(h, window), max(w, window)
    padded = [F.pad(t, (0, pw - w, 0, ph - h)) for t in inputs]
    out = torch.zeros(b, num_classes, ph, pw, device=inputs[0].device)
    count = torch.zeros(1, 1, ph, pw, device=inputs[0].device)
    boxes = [(top, left) for top in window_starts(ph, window, stride) for left in window_starts(pw, window, stride)]
    for i in range(0, len(boxes), max(1, window_batch)):
        group = boxes[i:i + max(1, window_batch)]
        crops = [torch.cat([t[..., y:y + window, x:x + window] for y, x in group]) for t in padded]  # (k*B, C, w, w)
        logits = fn(*crops)
        if logits.shape != (len(group) * b, num_classes, window, window):
            raise ValueError(f"window function returned {tuple(logits.shape)}, "
                             f"expected {(len(group) * b, num_classes, window, window)}")
        for j, (y, x) in enumerate(group):
            out[..., y:y + window, x:x + window] += logits[j * b:(j + 1) * b].float()
            count[..., y:y + window, x:x + window] += 1
    return (out / count)[..., :h, :w]
