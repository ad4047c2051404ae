"""Rotate one square region of an image in place, with no empty corners.

A plain rotation of the s x s region would leave its corners empty (filled with a constant). So
we rotate a larger crop, side s + 2m with m = ceil(s (sqrt 2 - 1) / 2) + 1, centred on the region:
the rotated crop covers a disk of radius >= s / sqrt 2 (+1 px for the bilinear footprint) around
the centre, which holds the inscribed centred s x s square at any angle. That square is pasted
back. Where the crop leaves the image it is completed by reflection, so even regions at the border
get real image content in their corners. Only the kept square is resampled: one PIL affine
transform with an (s, s) output, the same mapping as `Image.rotate` followed by the centre crop,
at half the cost.
"""
from __future__ import annotations

import math

import numpy as np
from PIL import Image


def margin(side: int) -> int:
    """Extra pixels on each side of a side-px square so that its rotation has no empty corners."""
    return math.ceil(side * (math.sqrt(2) - 1) / 2) + 1


def rotate_region(image: np.ndarray, box: tuple[int, int, int], angle: float) -> np.ndarray:
    """image (H, W, 3) uint8; box (y, x, side) in pixels -> a new image with that square rotated
    by `angle` degrees counter-clockwise (bilinear) about its centre. The input is not modified."""
    y, x, side = box
    H, W = image.shape[:2]
    m = margin(side)
    y0, y1, x0, x1 = y - m, y + side + m, x - m, x + side + m  # the crop, possibly outside
    crop = image[max(y0, 0):min(y1, H), max(x0, 0):min(x1, W)]
    pads = ((max(-y0, 0), max(y1 - H, 0)), (max(-x0, 0), max(x1 - W, 0)), (0, 0))
    if any(p for pair in pads for p in pair):
        crop = np.pad(crop, pads, mode="reflect")  # (side+2m, side+2m, 3)
    out = image.copy()
    out[y:y + side, x:x + side] = _rotate_centre(crop, angle, side)
    return out


def _rotate_centre(crop: np.ndarray, angle: float, side: int) -> np.ndarray:
    """(C, C, 3) -> the centred (side, side, 3) square of the crop rotated by `angle` degrees ccw."""
    centre_in, centre_out = crop.shape[1] / 2, side / 2
    a = -math.radians(angle)  # PIL's affine maps output coordinates back into the input
    cos, sin = round(math.cos(a), 15), round(math.sin(a), 15)  # as Image.rotate: exact at 90 degrees
    # input = R (output - centre_out) + centre_in, in (x, y) pixel coordinates
    matrix = (cos, sin, centre_in - cos * centre_out - sin * centre_out,
              -sin, cos, centre_in + sin * centre_out - cos * centre_out)
    img = Image.fromarray(crop).transform((side, side), Image.Transform.AFFINE, matrix,
                                          resample=Image.Resampling.BILINEAR)
    return np.asarray(img)
