"""Image transforms of the linear-probe recipe, in PIL + torch; RandAugment from timm where timm imports.

Train (the paper's probe, timm `create_transform(is_training=True, auto_augment="rand-m9-mstd0.5-inc1",
re_prob=0.25, interpolation="bicubic")`): RandomResizedCrop(scale 0.08-1, ratio 3/4-4/3, bicubic)
-> horizontal flip -> RandAugment(2 ops, magnitude 9 +- 0.5, "increasing" op set) -> tensor ->
ImageNet normalisation -> RandomErasing(p 0.25, per-pixel normal noise).
Eval: resize the short side to size / 0.875 (bicubic) -> centre crop `size` -> tensor -> normalise.

Every random choice draws from a `random.Random` passed in, so a sample's augmentation depends
only on (seed, epoch, index), never on which DataLoader worker ran it.

RandAugment: timm's own (`rand_augment_transform`, the paper's) where timm is importable, else
RandAugment below, the same ops and magnitudes in PIL. Why both: timm needs a torchvision built for
the installed torch, which CPU machines and many clusters lack (timm is the optional `vit` extra);
the probe must run there too. timm's ops draw from the global `random` and `numpy.random`, so
TimmRandAugment seeds them from the sample's `rng` and restores them after, keeping the property above.
RANDAUG_SOURCE says which one this process uses (logged with the probe's results).
"""
from __future__ import annotations

import math
import random

import numpy as np
import torch
from PIL import Image, ImageEnhance, ImageOps

from roma.data.transforms import IMAGENET_MEAN, IMAGENET_STD

EVAL_CROP_PCT = 0.875  # 224 / 256, as the paper's eval transform
_FILL = (124, 116, 104)  # ImageNet mean in uint8: the fill of affine ops (as timm)


# ----------------------------------------------------------------------------- RandAugment ops
def _signed(v: float, rng: random.Random) -> float:
    return -v if rng.random() < 0.5 else v


def _affine(img: Image.Image, matrix, rng: random.Random) -> Image.Image:
    resample = rng.choice((Image.Resampling.BILINEAR, Image.Resampling.BICUBIC))
    return img.transform(img.size, Image.Transform.AFFINE, matrix, resample=resample, fillcolor=_FILL)


def _rotate(img, m, rng):
    resample = rng.choice((Image.Resampling.BILINEAR, Image.Resampling.BICUBIC))
    return img.rotate(_signed(m / 10 * 30.0, rng), resample=resample, fillcolor=_FILL)


def _shear_x(img, m, rng):
    return _affine(img, (1, _signed(m / 10 * 0.3, rng), 0, 0, 1, 0), rng)


def _shear_y(img, m, rng):
    return _affine(img, (1, 0, 0, _signed(m / 10 * 0.3, rng), 1, 0), rng)


def _translate_x(img, m, rng):
    return _affine(img, (1, 0, _signed(m / 10 * 0.45, rng) * img.size[0], 0, 1, 0), rng)


def _translate_y(img, m, rng):
    return _affine(img, (1, 0, 0, 0, 1, _signed(m / 10 * 0.45, rng) * img.size[1]), rng)


def _enhance(cls):
    # "increasing": a larger magnitude moves the factor further from 1 in either direction
    return lambda img, m, rng: cls(img).enhance(max(0.1, 1.0 + _signed(m / 10 * 0.9, rng)))


def _posterize(img, m, rng):
    return ImageOps.posterize(img, max(1, 4 - int(m / 10 * 4)))  # fewer bits as m grows


def _solarize(img, m, rng):
    return ImageOps.solarize(img, 256 - int(m / 10 * 256))  # lower threshold as m grows


def _solarize_add(img, m, rng):
    add = int(m / 10 * 110)
    lut = [min(255, v + add) if v < 128 else v for v in range(256)] * len(img.getbands())
    return img.point(lut)


RAND_OPS = {
    "AutoContrast": lambda img, m, rng: ImageOps.autocontrast(img),
    "Equalize": lambda img, m, rng: ImageOps.equalize(img),
    "Invert": lambda img, m, rng: ImageOps.invert(img),
    "Rotate": _rotate,
    "PosterizeIncreasing": _posterize,
    "SolarizeIncreasing": _solarize,
    "SolarizeAdd": _solarize_add,
    "ColorIncreasing": _enhance(ImageEnhance.Color),
    "ContrastIncreasing": _enhance(ImageEnhance.Contrast),
    "BrightnessIncreasing": _enhance(ImageEnhance.Brightness),
    "SharpnessIncreasing": _enhance(ImageEnhance.Sharpness),
    "ShearX": _shear_x,
    "ShearY": _shear_y,
    "TranslateXRel": _translate_x,
    "TranslateYRel": _translate_y,
}


class RandAugment:
    """rand-m9-mstd0.5-inc1: n ops drawn with replacement, each applied with probability p, magnitude
    ~ N(m, std) clipped to [0, 10] per op."""

    def __init__(self, n: int = 2, magnitude: float = 9.0, magnitude_std: float = 0.5, p: float = 0.5):
        self.n, self.magnitude, self.magnitude_std, self.p = n, magnitude, magnitude_std, p
        self.names = list(RAND_OPS)

    def __call__(self, img: Image.Image, rng: random.Random) -> Image.Image:
        for name in rng.choices(self.names, k=self.n):
            if rng.random() > self.p:
                continue
            m = min(10.0, max(0.0, rng.gauss(self.magnitude, self.magnitude_std)))
            img = RAND_OPS[name](img, m, rng)
        return img


class TimmRandAugment:
    """timm's RandAugment under the (img, rng) call of this module: global RNGs seeded from rng, then restored."""

    def __init__(self, config: str = "rand-m9-mstd0.5-inc1"):
        from timm.data.auto_augment import rand_augment_transform

        self.op = rand_augment_transform(config, {"img_mean": _FILL})  # the fill timm's create_transform gives

    def __call__(self, img: Image.Image, rng: random.Random) -> Image.Image:
        py, npy = random.getstate(), np.random.get_state()
        try:
            random.seed(rng.getrandbits(64))
            np.random.seed(rng.getrandbits(32))
            return self.op(img)
        finally:
            random.setstate(py)
            np.random.set_state(npy)


def _timm_importable() -> bool:
    try:
        import timm.data.auto_augment  # noqa: F401
    except Exception:  # noqa: BLE001 - ImportError, or timm failing on a torchvision built for another torch
        return False
    return True


RANDAUG_SOURCE = "timm" if _timm_importable() else "roma"


def rand_augment() -> TimmRandAugment | RandAugment:
    """The probe's RandAugment (rand-m9-mstd0.5-inc1): timm's where importable, else ours."""
    return TimmRandAugment() if RANDAUG_SOURCE == "timm" else RandAugment()


# ----------------------------------------------------------------------------- geometry + tensors
def random_resized_crop(img: Image.Image, size: int, rng: random.Random, scale=(0.08, 1.0),
                        ratio=(3 / 4, 4 / 3)) -> Image.Image:
    w, h = img.size
    area = w * h
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
        cw, ch = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < cw <= w and 0 < ch <= h:
            left, top = rng.randint(0, w - cw), rng.randint(0, h - ch)
            return img.resize((size, size), Image.Resampling.BICUBIC, box=(left, top, left + cw, top + ch))
    # fallback: the central crop with the aspect ratio clamped into range
    in_ratio = w / h
    cw, ch = (w, round(w / ratio[0])) if in_ratio < ratio[0] else (
        (round(h * ratio[1]), h) if in_ratio > ratio[1] else (w, h))
    left, top = (w - cw) // 2, (h - ch) // 2
    return img.resize((size, size), Image.Resampling.BICUBIC, box=(left, top, left + cw, top + ch))


def resize_center_crop(img: Image.Image, size: int, crop_pct: float = EVAL_CROP_PCT) -> Image.Image:
    """Short side -> size / crop_pct (bicubic), then the central size x size crop."""
    w, h = img.size
    short = int(size / crop_pct)
    nw, nh = (short, round(h * short / w)) if w <= h else (round(w * short / h), short)
    img = img.resize((nw, nh), Image.Resampling.BICUBIC)
    left, top = (nw - size) // 2, (nh - size) // 2
    return img.crop((left, top, left + size, top + size))


_MEAN = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
_STD = torch.tensor(IMAGENET_STD).view(3, 1, 1)


def to_normalized_tensor(img: Image.Image) -> torch.Tensor:
    """PIL RGB (H, W) -> (3, H, W) float, ImageNet-normalised."""
    x = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1).float().div_(255)
    return (x - _MEAN) / _STD


def random_erasing(x: torch.Tensor, rng: random.Random, p: float = 0.25, area=(0.02, 1 / 3),
                   log_ratio=(math.log(0.3), math.log(1 / 0.3))) -> torch.Tensor:
    """Erase one random rectangle with per-pixel N(0, 1) noise (timm mode "pixel"), in place."""
    if rng.random() >= p:
        return x
    _, h, w = x.shape
    for _ in range(10):
        target = h * w * rng.uniform(*area)
        aspect = math.exp(rng.uniform(*log_ratio))
        eh, ew = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
        if eh < h and ew < w:
            top, left = rng.randint(0, h - eh), rng.randint(0, w - ew)
            g = torch.Generator().manual_seed(rng.getrandbits(63))
            x[:, top:top + eh, left:left + ew] = torch.randn(x.shape[0], eh, ew, generator=g)
            break
    return x


class TrainTransform:
    def __init__(self, size: int, reprob: float = 0.25, randaug: RandAugment | TimmRandAugment | None = None):
        self.size, self.reprob = size, reprob
        self.randaug = randaug or rand_augment()

    def __call__(self, img: Image.Image, rng: random.Random) -> torch.Tensor:
        img = random_resized_crop(img, self.size, rng)
        if rng.random() < 0.5:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        img = self.randaug(img, rng)
        return random_erasing(to_normalized_tensor(img), rng, self.reprob)


class EvalTransform:
    def __init__(self, size: int, crop_pct: float = EVAL_CROP_PCT):
        self.size, self.crop_pct = size, crop_pct

    def __call__(self, img: Image.Image, rng: random.Random | None = None) -> torch.Tensor:
        return to_normalized_tensor(resize_center_crop(img, self.size, self.crop_pct))
