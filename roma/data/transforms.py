"""Pretraining augmentation, in PIL/numpy (no torchvision), driven by one numpy Generator per sample.

    t = PretrainTransform(img_size=192, patch_size=16, ares=AresConfig())
    out = t(pil_image, rng)   # {"image", "target": (3,H,W) float32 normalised, "region": (3,) long, "angle": ()}

Order, as in the recipe: RandomResizedCrop(img_size, scale (0.2, 1), ratio (3/4, 4/3), bicubic),
horizontal flip (p 0.5), ARES on the uint8 image, then ImageNet normalisation once. The model
predicts `target`: the rotated image when ares.target == "rotated" (as released), the image before
ARES when "original".
"""
from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image

from roma.config import AresConfig

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_MEAN = np.asarray(IMAGENET_MEAN, dtype=np.float32) * 255.0
_INV_STD = 1.0 / (np.asarray(IMAGENET_STD, dtype=np.float32) * 255.0)


def crop_box(width: int, height: int, scale: tuple[float, float], ratio: tuple[float, float],
             rng: np.random.Generator) -> tuple[int, int, int, int]:
    """RandomResizedCrop's box (left, top, w, h): area fraction ~ U(scale), log aspect ~ U(log ratio);
    10 tries, then the largest centred box whose aspect is clamped to `ratio`."""
    area = width * height
    log_r = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(*log_r))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return left, top, w, h
    aspect = width / height
    if aspect < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif aspect > ratio[1]:
        w, h = int(round(height * ratio[1])), height
    else:
        w, h = width, height
    return (width - w) // 2, (height - h) // 2, w, h


def random_resized_crop(img: Image.Image, size: int, rng: np.random.Generator,
                        scale: tuple[float, float] = (0.2, 1.0),
                        ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> Image.Image:
    left, top, w, h = crop_box(img.width, img.height, scale, ratio, rng)
    # resize straight from the box: no intermediate crop copy; PIL antialiases when shrinking
    return img.resize((size, size), Image.Resampling.BICUBIC, box=(left, top, left + w, top + h))


def normalize(image: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, H, W) float32, ImageNet-normalised (the only normalisation)."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"normalize wants an (H, W, 3) uint8 image, got {image.dtype} {image.shape}")
    x = (image.astype(np.float32) - _MEAN) * _INV_STD  # (H, W, 3)
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))


def denormalize(x: torch.Tensor) -> torch.Tensor:
    """(..., 3, H, W) normalised -> [0, 1] floats (for figures and checks)."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=x.dtype).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=x.dtype).view(3, 1, 1)
    return x * std + mean


class PretrainTransform:
    def __init__(self, img_size: int, patch_size: int, ares: AresConfig | None = None,
                 crop_scale: tuple[float, float] = (0.2, 1.0),
                 crop_ratio: tuple[float, float] = (3 / 4, 4 / 3), hflip: bool = True):
        if img_size < 1 or patch_size < 1 or img_size % patch_size:
            raise ValueError(f"model.img_size {img_size} must be a positive multiple of patch_size {patch_size}")
        lo, hi = crop_scale
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"data.crop_scale must satisfy 0 < low <= high <= 1, got {crop_scale}")
        if not 0 < crop_ratio[0] <= crop_ratio[1]:
            raise ValueError(f"crop ratio must satisfy 0 < low <= high, got {crop_ratio}")
        self.img_size, self.patch_size = img_size, patch_size
        self.crop_scale, self.crop_ratio, self.hflip = (lo, hi), tuple(crop_ratio), hflip
        self.ares_cfg = ares if ares is not None else AresConfig(enabled=False)
        self.ares = None
        if self.ares_cfg.enabled:
            from roma.ares import Ares  # lazy: the data layer imports without the ARES code loaded

            self.ares = Ares(self.ares_cfg, patch_size)

    def __call__(self, img: Image.Image, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        img = img if img.mode == "RGB" else img.convert("RGB")
        crop = random_resized_crop(img, self.img_size, rng, self.crop_scale, self.crop_ratio)
        arr = np.asarray(crop, dtype=np.uint8)  # (H, W, 3)
        if self.hflip and rng.random() < 0.5:
            arr = arr[:, ::-1]
        arr = np.ascontiguousarray(arr)
        if self.ares is None:
            image = normalize(arr)
            return {"image": image, "target": image, "region": torch.zeros(3, dtype=torch.long),
                    "angle": torch.tensor(0.0)}
        res = self.ares(arr, rng)
        image = normalize(res.image)
        target = image if self.ares_cfg.target == "rotated" else normalize(arr)
        return {"image": image, "target": target, "region": torch.tensor(res.region, dtype=torch.long),
                "angle": torch.tensor(float(res.angle))}
