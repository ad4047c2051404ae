"""ARES (adaptive rotation encoding): rotate the most textured region of each pretraining image.

Pipeline per image (uint8 RGB, before normalisation), `Ares(cfg, patch_size)(image, rng)`:
  1. grayscale, then one texture score per p x p patch (descriptors.py: LBP entropy by default,
     HOG or Haar-wavelet energy as the ablation's alternatives);
  2. the top patch, then the largest candidate square (cfg.region_sizes, in patches) containing it
     whose best mean score is at least the image's mean score (region.py);
  3. a random angle (uniform in [-max_angle, max_angle] or one of cfg.angles), and the region
     rotated about its centre with no empty corners (rotate.py); applied with probability cfg.p.
The result carries the region (top, left, size in patches) and the angle, which the model turns
into the angle embedding (`angle_bin` gives the bin). cfg.target is applied by the caller.
"""
from .descriptors import DESCRIPTORS, grayscale, lbp_codes
from .region import select_region
from .rotate import rotate_region
from .transform import Ares, AresResult, angle_bin

__all__ = ["Ares", "AresResult", "angle_bin", "DESCRIPTORS", "grayscale", "lbp_codes",
           "select_region", "rotate_region"]
