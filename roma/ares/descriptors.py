"""Per-patch texture scores for ARES: a grayscale image -> one number per p x p patch.

Every descriptor maps gray (H, W) -> scores (H/p, W/p), float64, higher = more texture, and is
vectorised over the whole image (no per-patch Python loop). Borders are handled by edge padding,
so a flat image scores 0 everywhere, border patches included.

- lbp (default): LBP codes (P=8, R=1, skimage's "default" method) computed once on the whole
  image, then the score of a patch is the Shannon entropy (nats) of its 256-bin code histogram:
  0 when every pixel of the patch has the same code (e.g. a flat patch), up to log(p*p)
  when every pixel has its own code.
  (The released code scored the L2 norm of the histogram, which ranks flat patches highest.)
- hog: gradient orientation histogram per patch (9 unsigned bins, magnitude-weighted, as a HOG
  cell); score = mean gradient magnitude * orientation entropy / log(9). A flat patch scores 0,
  a single straight edge little, texture with strong gradients in many directions the most.
- wavelet: one-level orthonormal Haar transform; score = log1p(mean detail energy per pixel),
  detail = LH^2 + HL^2 + HH^2 (the patch's energy not explained by its 2x2 block means).
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

# LBP neighbour offsets exactly as skimage computes them (P=8, R=1): rounded to 5 decimals, so the
# axis neighbours are integer offsets and the diagonals are bilinearly interpolated at +-0.70711.
_P = 8
_LBP_DR = np.round(-np.sin(2 * np.pi * np.arange(_P, dtype=np.float64) / _P), 5)
_LBP_DC = np.round(np.cos(2 * np.pi * np.arange(_P, dtype=np.float64) / _P), 5)
_HOG_BINS = 9


def grayscale(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (H, W) uint8 luma, ITU-R 601 weights in 8-bit fixed point."""
    r, g, b = (image[..., i].astype(np.uint16) for i in range(3))
    return ((r * 77 + g * 150 + b * 29 + 128) >> 8).astype(np.uint8)


def lbp_codes(gray: np.ndarray) -> np.ndarray:
    """(H, W) -> (H, W) uint8 LBP codes, P=8, R=1, equal to
    `skimage.feature.local_binary_pattern(np.pad(gray, 1, "edge"), 8, 1)[1:-1, 1:-1]`.

    Same float64 arithmetic as skimage's Cython loop (bilinear interpolation of the diagonal
    neighbours in the padded image's coordinates; bit k set when neighbour k >= centre), done as
    whole-array operations. skimage interpolates each diagonal along columns first, with weights
    that depend only on the column, so the two column interpolations (at c - 0.70711 and
    c + 0.70711) are computed once for all rows and shared by the upper and lower diagonals.
    """
    H, W = gray.shape
    g = np.pad(gray, 1, mode="edge")  # (H+2, W+2): pixel (r, c) of gray is (r+1, c+1) here
    gf = g.astype(np.float64)
    centre, centre_f = g[1:-1, 1:-1], gf[1:-1, 1:-1]
    rows = np.arange(1, H + 1, dtype=np.float64)[:, None]  # padded coordinates, as skimage sees them
    cols = np.arange(1, W + 1, dtype=np.float64)[None, :]
    col_interp = {}  # column offset dc -> (H+2, W) rows of the padded image sampled at c + dc
    codes = np.zeros((H, W), dtype=np.uint8)
    for k in range(_P):
        dr, dc = _LBP_DR[k], _LBP_DC[k]
        if dr == np.floor(dr) and dc == np.floor(dc):  # axis neighbour: an exact integer comparison
            r0, c0 = 1 + int(dr), 1 + int(dc)
            bit = g[r0:r0 + H, c0:c0 + W] >= centre
        else:  # diagonal: interpolate along columns, then between the two rows
            if dc not in col_interp:
                pc = cols + dc
                fc = pc - np.floor(pc)  # (1, W), exactly skimage's per-column weight
                c0 = 1 + int(np.floor(dc))
                col_interp[dc] = (1 - fc) * gf[:, c0:c0 + W] + fc * gf[:, c0 + 1:c0 + 1 + W]
            h = col_interp[dc]
            pr = rows + dr
            fr = pr - np.floor(pr)  # (H, 1)
            r0 = 1 + int(np.floor(dr))
            bit = (1 - fr) * h[r0:r0 + H] + fr * h[r0 + 1:r0 + 1 + H] >= centre_f
        codes |= bit.view(np.uint8) << np.uint8(k)
    return codes


@lru_cache(maxsize=16)
def _patch_index(H: int, W: int, p: int) -> np.ndarray:
    """(H, W) int32: the raster index of the patch that each pixel belongs to."""
    gw = W // p
    return ((np.arange(H) // p)[:, None] * gw + (np.arange(W) // p)[None, :]).astype(np.int32)


@lru_cache(maxsize=16)
def _xlogx(n: int) -> np.ndarray:
    """Table k * log(k) for k = 0..n (0 at k = 0): histogram entropy without per-bin logs."""
    k = np.arange(n + 1, dtype=np.float64)
    return k * np.log(np.maximum(k, 1))


def patch_histograms(labels: np.ndarray, p: int, n_bins: int, weights: np.ndarray | None = None):
    """labels (H, W) ints in [0, n_bins) -> (gh*gw, n_bins) per-patch histograms (one bincount)."""
    H, W = labels.shape
    key = _patch_index(H, W, p) * n_bins + labels
    n = (H // p) * (W // p)
    w = None if weights is None else weights.ravel()
    return np.bincount(key.ravel(), weights=w, minlength=n * n_bins).reshape(n, n_bins)


def lbp_entropy(codes: np.ndarray, p: int) -> np.ndarray:
    """(H, W) LBP codes -> (H/p, W/p) entropy (nats) of each patch's code histogram."""
    H, W = codes.shape
    counts = patch_histograms(codes, p, 256)  # (n, 256) ints, each row sums to p*p
    n = p * p
    ent = np.log(n) - _xlogx(n)[counts].sum(1) / n  # H = log n - sum c log c / n
    return np.maximum(ent, 0.0).reshape(H // p, W // p)  # clip -1e-16 rounding on flat patches


def lbp_scores(gray: np.ndarray, p: int) -> np.ndarray:
    return lbp_entropy(lbp_codes(gray), p)


def hog_scores(gray: np.ndarray, p: int) -> np.ndarray:
    H, W = gray.shape
    g = np.pad(gray, 1, mode="edge").astype(np.float32)
    gx = g[1:-1, 2:] - g[1:-1, :-2]  # central differences, as HOG
    gy = g[2:, 1:-1] - g[:-2, 1:-1]
    mag = np.hypot(gx, gy)
    theta = np.arctan2(gy, gx) % np.pi  # unsigned orientation in [0, pi)
    bins = np.minimum((theta * (_HOG_BINS / np.pi)).astype(np.int32), _HOG_BINS - 1)
    hist = patch_histograms(bins, p, _HOG_BINS, weights=mag)  # (n, 9) magnitude per orientation
    total = hist.sum(1)
    q = hist / np.maximum(total, 1e-12)[:, None]
    ent = -(q * np.log(np.where(q > 0, q, 1.0))).sum(1) / np.log(_HOG_BINS)  # in [0, 1]
    return (total / (p * p) * ent).reshape(H // p, W // p)


def wavelet_scores(gray: np.ndarray, p: int) -> np.ndarray:
    if p % 2:
        raise ValueError(f"the wavelet descriptor needs an even patch size, got {p}")
    H, W = gray.shape
    x = gray.astype(np.float32)
    a, b = x[0::2, 0::2], x[0::2, 1::2]  # (H/2, W/2) each: the 4 pixels of every 2x2 block
    c, d = x[1::2, 0::2], x[1::2, 1::2]
    lh, hl, hh = (a + b - c - d) / 2, (a - b + c - d) / 2, (a - b - c + d) / 2
    energy = lh * lh + hl * hl + hh * hh  # (H/2, W/2)
    q = p // 2
    per_patch = energy.reshape(H // p, q, W // p, q).sum((1, 3), dtype=np.float64) / (p * p)
    return np.log1p(per_patch)


DESCRIPTORS = {"lbp": lbp_scores, "hog": hog_scores, "wavelet": wavelet_scores}
