"""ARES region search: which square of patches to rotate, given per-patch texture scores.

Rule (the paper's intent, without the released code's transposition and offset bugs): take the
highest-scoring patch; for each candidate side s (in patches, largest first) look at every
patch-aligned s x s window inside the grid that contains that patch, take the one with the best
mean score, and accept it if that mean is at least the mean score of the whole image. The smallest
side is the fallback when no larger one passes. Ties go to the first in raster order.
"""
from __future__ import annotations

import numpy as np

# Relative slack on the mean rule: window sums come from an integral image, so a window of equal
# scores can land a rounding error below the image mean; it must still count as "at least".
_RTOL = 1e-9


def window_sums(scores: np.ndarray, s: int) -> np.ndarray:
    """(gh, gw) -> (gh-s+1, gw-s+1): sum of every s x s window, from one integral image."""
    gh, gw = scores.shape
    integral = np.zeros((gh + 1, gw + 1), dtype=np.float64)
    integral[1:, 1:] = scores.cumsum(0).cumsum(1)
    return integral[s:, s:] - integral[:-s, s:] - integral[s:, :-s] + integral[:-s, :-s]


def select_region(scores: np.ndarray, sizes: tuple[int, ...]) -> tuple[int, int, int]:
    """scores (gh, gw) -> (top, left, size) in patches; sizes are tried largest first."""
    if scores.ndim != 2 or scores.size == 0:
        raise ValueError(f"scores must be a non-empty (gh, gw) array, got shape {scores.shape}")
    gh, gw = scores.shape
    fitting = sorted((s for s in set(sizes) if 1 <= s <= min(gh, gw)), reverse=True)
    if not fitting:
        raise ValueError(f"no region size in {tuple(sizes)} fits the {gh}x{gw} patch grid")
    ti, tj = np.unravel_index(int(np.argmax(scores)), scores.shape)  # the top patch
    image_mean = float(scores.mean())
    threshold = image_mean - _RTOL * max(1.0, abs(image_mean))
    for s in fitting:
        # top-left corners (r, c) whose window contains (ti, tj) and stays inside the grid
        r_lo, r_hi = max(0, ti - s + 1), min(ti, gh - s)
        c_lo, c_hi = max(0, tj - s + 1), min(tj, gw - s)
        sums = window_sums(scores, s)[r_lo:r_hi + 1, c_lo:c_hi + 1]
        i, j = np.unravel_index(int(np.argmax(sums)), sums.shape)
        region = (int(r_lo + i), int(c_lo + j), s)
        if sums[i, j] / (s * s) >= threshold or s == fitting[-1]:
            return region
    raise AssertionError("unreachable: the smallest size always returns")
