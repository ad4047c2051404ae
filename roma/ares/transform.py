"""The ARES data transform: score patches, pick a region, rotate it; plus the angle -> bin map.

Runs per image on uint8 RGB before normalisation (in a DataLoader worker). What the model is asked
to predict is the caller's choice, by `AresConfig.target`: "rotated" (as the released pretraining
code) trains on `AresResult.image` as both input and target; "original" feeds `AresResult.image`
as input and keeps the untouched input image as the target. This transform never sees the target.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from roma.config import AresConfig

from .descriptors import DESCRIPTORS, grayscale
from .region import select_region
from .rotate import rotate_region


@dataclass(frozen=True)
class AresResult:
    image: np.ndarray  # (H, W, 3) uint8, the region rotated in place (a new array; input untouched)
    region: tuple[int, int, int]  # (top, left, size) in patch units; (0, 0, 0) when not applied
    angle: float  # degrees, counter-clockwise; 0.0 when not applied


def _check_config(cfg: AresConfig, patch_size: int) -> None:
    if not isinstance(patch_size, int) or patch_size < 1:
        raise ValueError(f"patch_size must be a positive int, got {patch_size!r}")
    if cfg.descriptor not in DESCRIPTORS:
        raise ValueError(f"ares.descriptor must be one of {sorted(DESCRIPTORS)}, got {cfg.descriptor!r}")
    if cfg.descriptor == "wavelet" and patch_size % 2:
        raise ValueError(f"ares.descriptor 'wavelet' needs an even patch size, got {patch_size}")
    if not cfg.region_sizes or any(not isinstance(s, int) or s < 1 for s in cfg.region_sizes):
        raise ValueError(f"ares.region_sizes must be positive ints (patches), got {cfg.region_sizes!r}")
    if not 0.0 <= cfg.p <= 1.0:
        raise ValueError(f"ares.p must be a probability in [0, 1], got {cfg.p}")
    if not cfg.angles and not (math.isfinite(cfg.max_angle) and cfg.max_angle > 0):
        raise ValueError(f"ares.max_angle must be > 0 degrees (or give ares.angles), got {cfg.max_angle}")
    if cfg.target not in ("rotated", "original"):
        raise ValueError(f"ares.target must be 'rotated' or 'original', got {cfg.target!r}")
    if cfg.angle_bins < 1:
        raise ValueError(f"ares.angle_bins must be >= 1, got {cfg.angle_bins}")


def angle_bin(angle: float, cfg: AresConfig) -> int:
    """The angle embedding's bin of `angle`: the index of the nearest angle of `cfg.angles` when a
    discrete set is given, else one of `cfg.angle_bins` equal bins over [-max_angle, max_angle]
    (the end points fall in the first and last bin). Same rule as the model's AngleEmbedding.bin."""
    if cfg.angles:
        return int(np.argmin(np.abs(np.asarray(cfg.angles, dtype=np.float64) - angle)))
    if not cfg.max_angle > 0:
        raise ValueError(f"ares.max_angle must be > 0 degrees for angle bins, got {cfg.max_angle}")
    frac = (angle + cfg.max_angle) / (2 * cfg.max_angle)
    return int(min(max(math.floor(frac * cfg.angle_bins), 0), cfg.angle_bins - 1))


class Ares:
    """`Ares(cfg, patch_size)(image, rng) -> AresResult`; see the package docstring for the rule."""

    def __init__(self, cfg: AresConfig, patch_size: int):
        _check_config(cfg, patch_size)
        self.cfg, self.patch_size = cfg, patch_size
        self.sizes = tuple(sorted(set(cfg.region_sizes), reverse=True))  # largest first
        self._score = DESCRIPTORS[cfg.descriptor]

    def _check_grid(self, shape: tuple[int, ...], what: str) -> None:
        p = self.patch_size
        H, W = shape[:2]
        if H < p or W < p or H % p or W % p:
            raise ValueError(f"{what} of {H}x{W} px is not a non-empty multiple of the patch size {p}")

    def scores(self, gray: np.ndarray) -> np.ndarray:
        """gray (H, W) (uint8 from `grayscale`) -> (H/p, W/p) float64 per-patch texture scores."""
        if not isinstance(gray, np.ndarray) or gray.ndim != 2:
            raise ValueError(f"gray must be an (H, W) array, got {getattr(gray, 'shape', type(gray))}")
        self._check_grid(gray.shape, "gray image")
        return self._score(gray, self.patch_size)

    def select_region(self, scores: np.ndarray) -> tuple[int, int, int]:
        """(gh, gw) scores -> (top, left, size) in patches (see roma.ares.region)."""
        return select_region(np.asarray(scores, dtype=np.float64), self.sizes)

    def sample_angle(self, rng: np.random.Generator) -> float:
        if self.cfg.angles:
            return float(self.cfg.angles[int(rng.integers(len(self.cfg.angles)))])
        return float(rng.uniform(-self.cfg.max_angle, self.cfg.max_angle))

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> AresResult:
        if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"image must be an (H, W, 3) RGB array, got {getattr(image, 'shape', type(image))}")
        if image.dtype != np.uint8:
            raise ValueError(f"image must be uint8 (ARES runs before normalisation), got {image.dtype}")
        self._check_grid(image.shape, "image")
        if not isinstance(rng, np.random.Generator):
            raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
        # one draw for "apply?" whatever p is, so the rest of the stream does not depend on p
        if not (self.cfg.enabled and rng.random() < self.cfg.p):
            return AresResult(image.copy(), (0, 0, 0), 0.0)
        angle = self.sample_angle(rng)
        top, left, size = self.select_region(self.scores(grayscale(image)))
        p = self.patch_size
        rotated = rotate_region(image, (top * p, left * p, size * p), angle)
        return AresResult(rotated, (top, left, size), angle)
