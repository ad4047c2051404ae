"""Augmentation: crop box rule, shapes/dtypes, one normalisation, ARES placement and targets."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from roma.config import AresConfig
from roma.data.transforms import (IMAGENET_MEAN, IMAGENET_STD, PretrainTransform, crop_box, denormalize,
                                  normalize)


def noise_image(h=40, w=56, seed=0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def test_crop_box_within_bounds_and_scale():
    rng = np.random.default_rng(0)
    for _ in range(300):
        left, top, w, h = crop_box(300, 200, (0.2, 1.0), (3 / 4, 4 / 3), rng)
        assert 0 <= left and left + w <= 300 and 0 <= top and top + h <= 200
        assert 0.19 <= w * h / (300 * 200) <= 1.01
        assert 3 / 4 - 0.02 <= w / h <= 4 / 3 + 0.02
    # a 10:1 strip never fits the ratio range: the fallback is the centred clamped box
    assert crop_box(1000, 100, (0.9, 1.0), (3 / 4, 4 / 3), np.random.default_rng(0)) == (433, 0, 133, 100)


def test_normalisation_is_applied_once():
    colour = np.array([200, 100, 30], dtype=np.uint8)
    img = np.broadcast_to(colour, (8, 8, 3)).copy()
    x = normalize(img)
    assert x.shape == (3, 8, 8) and x.dtype == torch.float32
    want = (colour / 255.0 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    assert torch.allclose(x[:, 3, 5], torch.tensor(want, dtype=torch.float32), atol=1e-5)
    assert torch.allclose(denormalize(x)[:, 0, 0] * 255, torch.tensor(colour, dtype=torch.float32), atol=1e-3)
    with pytest.raises(ValueError, match="uint8"):
        normalize(img.astype(np.float32))


def test_no_ares_output_shapes_and_zero_region():
    t = PretrainTransform(32, 8, AresConfig(enabled=False))
    out = t(noise_image(), np.random.default_rng(0))
    assert out["image"].shape == out["target"].shape == (3, 32, 32)
    assert out["image"].dtype == torch.float32 and torch.equal(out["image"], out["target"])
    assert out["region"].dtype == torch.long and out["region"].tolist() == [0, 0, 0]
    assert out["angle"].item() == 0.0
    # after normalisation a uniform-noise image has roughly zero mean, not [0, 255] values
    assert out["image"].abs().max() < 3 and -1 < out["image"].mean() < 1


def test_hflip_is_a_mirror_of_the_same_crop():
    t_flip = PretrainTransform(32, 8, None, crop_scale=(1.0, 1.0), hflip=True)
    t_none = PretrainTransform(32, 8, None, crop_scale=(1.0, 1.0), hflip=False)
    img, flipped = noise_image(48, 48), 0
    for s in range(8):
        a = t_flip(img, np.random.default_rng(s))["image"]
        b = t_none(img, np.random.default_rng(s))["image"]
        assert torch.equal(a, b) or torch.equal(a, b.flip(-1))
        flipped += not torch.equal(a, b)
    assert 0 < flipped < 8


@pytest.mark.parametrize("target", ["rotated", "original"])
def test_ares_region_angle_and_target(target):
    cfg = AresConfig(region_sizes=(2, 1), max_angle=45.0, target=target)
    t = PretrainTransform(32, 8, cfg)
    out = t(noise_image(), np.random.default_rng(1))
    top, left, size = out["region"].tolist()
    assert size in (1, 2) and 0 <= top <= 4 - size and 0 <= left <= 4 - size
    assert -45 <= out["angle"].item() <= 45 and out["angle"].item() != 0
    # the same draws without ARES give the pre-rotation image
    plain = PretrainTransform(32, 8, AresConfig(enabled=False))(noise_image(), np.random.default_rng(1))["image"]
    inside = (slice(None), slice(top * 8, (top + size) * 8), slice(left * 8, (left + size) * 8))
    outside = torch.ones(32, 32, dtype=torch.bool)
    outside[inside[1:]] = False
    assert torch.equal(out["image"][:, outside], plain[:, outside])
    assert not torch.equal(out["image"][inside], plain[inside])
    want = out["image"] if target == "rotated" else plain
    assert torch.equal(out["target"], want)


def test_bad_transform_config_errors():
    with pytest.raises(ValueError, match="multiple of patch_size"):
        PretrainTransform(30, 8)
    with pytest.raises(ValueError, match="crop_scale"):
        PretrainTransform(32, 8, crop_scale=(0.0, 1.0))
