"""Dense-task datasets: scenes (whole images + labels), fixed splits, random training crops.

    splits = load_splits("levir", root)          # {"train": [Scene], "val": [...], "test": [...]}
    arrays = scene.load()                        # CD: (before, after, label); seg: (image, label)
    train = CropDataset(splits["train"], crop=256, seed=0)   # items: (*images (3, c, c), label (c, c))

Images come out as float32 (H, W, 3) in [0, 1] and labels as uint8 (H, W) in {0, 1}; tensors are
normalised once with the ImageNet mean / std (the project contract, also for SpaceNet, where RoMA's
config used SpaceNet statistics). Label 255 marks padding and is ignored by the loss and metrics.

Sources and their fixed splits (the test split is never used to choose anything):
- oscd: `<root>/<city>/imgs_{1,2}_rect/B04.tif, B03.tif, B02.tif` (RGB), `<labels_root>/<city>/cm/cm.png`,
  train/test cities from `<root>/train.txt`, `<root>/test.txt` as released (comma separated).
  A seeded `val_fraction` of the train cities is held out for validation. Sentinel-2 reflectances
  are stretched per city and band to [0, 1] between the 2nd and 98th percentiles of *both* dates
  together, so a brightness change between dates stays a change.
- levir: LEVIR-CD-style `A/`, `B/`, `label/` (same file names). The split comes from, in order:
  `<root>/{train,val,test}/{A,B,label}` (the official release), `<root>/list/{train,val,test}.txt`,
  or `train_` / `val_` / `test_` file-name prefixes (the shared samples).
- spacenet: SpaceNet v1 `<root>/3band/*img<N>.tif` with `<root>/geojson/*img<N>.geojson`
  (rasterised by roma.eval.dense.rasterize); a seeded split by image id.
- segfolder: `<root>/images/*` and `<root>/masks/<same stem>.*` (or `<root>/{train,val,test}/...`);
  masks are binary: values > 127 (0/255 masks) or == 1 (0/1 masks) are foreground.
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.utils.data import Dataset

from roma.data.refs import IMAGE_EXTS
from roma.data.transforms import IMAGENET_MEAN, IMAGENET_STD

OSCD_RGB = ("B04", "B03", "B02")
IGNORE = 255
SPLITS = ("train", "val", "test")
_MEAN = np.asarray(IMAGENET_MEAN, dtype=np.float32)
_STD = np.asarray(IMAGENET_STD, dtype=np.float32)


@dataclass(frozen=True)
class Scene:
    name: str
    load: Callable[[], tuple[np.ndarray, ...]]  # -> (*images (H, W, 3) float [0, 1], label (H, W) uint8)


# ----------------------------------------------------------------------------- file reading
def read_image(path: Path) -> np.ndarray:
    """An image file -> (H, W, 3) float32 in [0, 1], by roma.data.decode's rules (BadImage names a refused one)."""
    from roma.data.decode import open_rgb

    return np.asarray(open_rgb(path), dtype=np.float32) / 255.0


def read_mask(path: Path) -> np.ndarray:
    """A binary mask file (0/255 or 0/1; RGB masks use the channel maximum) -> (H, W) uint8 {0, 1}."""
    from PIL import Image

    with Image.open(path) as im:
        m = np.asarray(im)
    if m.ndim == 3:
        m = m[..., :3].max(-1)
    return (m > 127).astype(np.uint8) if m.max() > 1 else (m == 1).astype(np.uint8)


def read_tiff(path: Path) -> np.ndarray:
    import tifffile

    if not path.is_file():
        raise FileNotFoundError(f"missing image file {path}")
    return tifffile.imread(path)


def _stems(folder: Path) -> dict[str, Path]:
    return {p.stem: p for p in sorted(folder.iterdir()) if p.suffix.lower() in IMAGE_EXTS and p.is_file()}


def _seeded_split(names: list[str], seed: int, val_fraction: float, test_fraction: float) -> dict[str, list[str]]:
    names = sorted(names)
    random.Random(seed).shuffle(names)
    n_test = round(len(names) * test_fraction)
    n_val = round(len(names) * val_fraction)
    if len(names) - n_test - n_val < 1:
        raise ValueError(f"{len(names)} items are too few for val {val_fraction} / test {test_fraction} fractions")
    return {"test": sorted(names[:n_test]), "val": sorted(names[n_test:n_test + n_val]),
            "train": sorted(names[n_test + n_val:])}


# ----------------------------------------------------------------------------- OSCD
def _city_list(path: Path) -> list[str]:
    if not path.is_file():
        raise FileNotFoundError(f"OSCD city list {path} is missing (train.txt / test.txt of the release)")
    return [c.strip() for c in re.split(r"[,\s]+", path.read_text()) if c.strip()]


def _stretch(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per band, the same 2-98 percentile linear stretch for both dates -> [0, 1]."""
    both = np.concatenate([a.reshape(-1, 3), b.reshape(-1, 3)])
    lo, hi = np.percentile(both, 2, axis=0), np.percentile(both, 98, axis=0)
    scale = np.where(hi > lo, hi - lo, 1.0)
    return tuple(np.clip((x - lo) / scale, 0, 1).astype(np.float32) for x in (a, b))


def oscd_city(root: Path, labels_root: Path, city: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    dates = []
    for folder in ("imgs_1_rect", "imgs_2_rect"):
        bands = [read_tiff(root / city / folder / f"{b}.tif").astype(np.float32) for b in OSCD_RGB]
        if any(x.shape != bands[0].shape or x.ndim != 2 for x in bands):
            raise ValueError(f"OSCD {city}/{folder}: bands {OSCD_RGB} differ in shape {[x.shape for x in bands]}")
        dates.append(np.stack(bands, -1))
    label_path = labels_root / city / "cm" / "cm.png"
    if not label_path.is_file():
        raise FileNotFoundError(f"OSCD label {label_path} is missing")
    label = read_mask(label_path)
    if dates[0].shape != dates[1].shape or dates[0].shape[:2] != label.shape:
        raise ValueError(f"OSCD {city}: date 1 {dates[0].shape}, date 2 {dates[1].shape}, label {label.shape} differ")
    return (*_stretch(*dates), label)


def oscd_splits(root: Path, labels_root: Path, val_fraction: float, split_seed: int) -> dict[str, list[Scene]]:
    train, test = _city_list(root / "train.txt"), _city_list(root / "test.txt")
    held = _seeded_split(train, split_seed, val_fraction, 0.0)
    names = {"train": held["train"], "val": held["val"], "test": test}
    # OSCD is small (24 cities of ~600 x 600 px): decode each city once and keep it
    load = lru_cache(maxsize=None)(lambda c: oscd_city(root, labels_root, c))
    return {s: [Scene(c, (lambda c=c: load(c))) for c in names[s]] for s in SPLITS}


# ----------------------------------------------------------------------------- LEVIR-CD-style folders
def _pair_scene(folder: Path, name: str, path_a: Path) -> Scene:
    b, lab = folder / "B" / path_a.name, folder / "label" / path_a.name
    for p in (b, lab):
        if not p.is_file():
            raise FileNotFoundError(f"{path_a.name}: {p} is missing (A/, B/ and label/ need the same file names)")
    return Scene(name, lambda: (read_image(path_a), read_image(b), read_mask(lab)))


def _folder_names(root: Path, a_dir: Path) -> dict[str, list[str]]:
    """Split file names by list/{split}.txt, else by train_/val_/test_ prefixes."""
    files = sorted(p.name for p in a_dir.iterdir() if p.suffix.lower() in IMAGE_EXTS and p.is_file())
    lists = {s: root / "list" / f"{s}.txt" for s in SPLITS}
    if all(p.is_file() for p in lists.values()):
        names = {s: [ln.strip() for ln in p.read_text().splitlines() if ln.strip()] for s, p in lists.items()}
        missing = sorted(set(sum(names.values(), [])) - set(files))
        if missing:
            raise FileNotFoundError(f"{root}/list names files absent from {a_dir}: {missing[:5]}")
        return names
    names = {s: [f for f in files if f.startswith(s + "_")] for s in SPLITS}
    if all(names.values()):
        return names
    raise ValueError(f"{root}: no split found: need {{train,val,test}}/ folders, list/{{train,val,test}}.txt, "
                     f"or train_/val_/test_ file-name prefixes (found counts {({s: len(v) for s, v in names.items()})})")


def levir_splits(root: Path) -> dict[str, list[Scene]]:
    if all((root / s / "A").is_dir() for s in SPLITS):  # the official release
        return {s: [_pair_scene(root / s, p.name, p) for p in sorted((root / s / "A").iterdir())
                    if p.suffix.lower() in IMAGE_EXTS and p.is_file()] for s in SPLITS}
    if not (root / "A").is_dir():
        raise FileNotFoundError(f"{root} has neither A/ nor train/A/ (LEVIR-CD-style folders)")
    names = _folder_names(root, root / "A")
    return {s: [_pair_scene(root, n, root / "A" / n) for n in names[s]] for s in SPLITS}


# ----------------------------------------------------------------------------- SpaceNet v1 and mask folders
def _img_key(path: Path) -> str:
    m = re.search(r"img(\d+)$", path.stem)
    if not m:
        raise ValueError(f"{path.name}: SpaceNet file names end in img<N> (e.g. 3band_AOI_1_RIO_img12.tif)")
    return m.group(1)


def spacenet_tile(tif: Path, geojson: Path) -> tuple[np.ndarray, np.ndarray]:
    from roma.eval.dense.rasterize import geotransform_from_tiff, rasterize_geojson

    img = read_tiff(tif)
    if img.ndim == 3 and img.shape[0] == 3 and img.shape[-1] != 3:
        img = img.transpose(1, 2, 0)  # planar (3, H, W) -> (H, W, 3)
    if img.ndim != 3 or img.shape[-1] < 3:
        raise ValueError(f"{tif}: expected a 3-band tile, got shape {img.shape}")
    img = img[..., :3].astype(np.float32)
    img /= 255.0 if img.max() <= 255 else 65535.0
    mask = rasterize_geojson(geojson, geotransform_from_tiff(tif), img.shape[:2])
    return img, mask


def spacenet_splits(root: Path, val_fraction: float, test_fraction: float, split_seed: int) -> dict[str, list[Scene]]:
    tifs = {_img_key(p): p for p in sorted((root / "3band").glob("*.tif")) if p.is_file()}  # regular files only
    geos = {_img_key(p): p for p in sorted((root / "geojson").glob("*.geojson")) if p.is_file()}
    if not tifs:
        raise FileNotFoundError(f"no tiles in {root / '3band'} (SpaceNet v1: 3band/*img<N>.tif)")
    missing = sorted(set(tifs) - set(geos), key=int)
    if missing:
        raise FileNotFoundError(f"{root / 'geojson'} lacks footprints for images {missing[:5]}")
    names = _seeded_split(list(tifs), split_seed, val_fraction, test_fraction)
    return {s: [Scene(f"img{k}", (lambda k=k: spacenet_tile(tifs[k], geos[k]))) for k in names[s]] for s in SPLITS}


def _seg_pairs(folder: Path) -> dict[str, tuple[Path, Path]]:
    imgs, masks = _stems(folder / "images"), _stems(folder / "masks")
    missing = sorted(set(imgs) - set(masks))
    if missing:
        raise FileNotFoundError(f"{folder / 'masks'} lacks masks for {missing[:5]}")
    return {k: (imgs[k], masks[k]) for k in imgs}


def segfolder_splits(root: Path, val_fraction: float, test_fraction: float, split_seed: int) -> dict[str, list[Scene]]:
    scene = lambda k, p: Scene(k, lambda: (read_image(p[0]), read_mask(p[1])))  # noqa: E731
    if all((root / s / "images").is_dir() for s in SPLITS):
        return {s: [scene(k, p) for k, p in _seg_pairs(root / s).items()] for s in SPLITS}
    if not (root / "images").is_dir():
        raise FileNotFoundError(f"{root} has neither images/ + masks/ nor {{train,val,test}}/images/")
    pairs = _seg_pairs(root)
    names = _seeded_split(list(pairs), split_seed, val_fraction, test_fraction)
    return {s: [scene(k, pairs[k]) for k in names[s]] for s in SPLITS}


# ----------------------------------------------------------------------------- tensors and crops
def to_tensors(arrays: tuple[np.ndarray, ...]) -> tuple[torch.Tensor, ...]:
    """(*images (H, W, 3) [0, 1], label (H, W)) -> (*normalised (3, H, W) float, label (H, W) long)."""
    *imgs, label = arrays
    for im in imgs:
        if im.ndim != 3 or im.shape[-1] != 3 or im.shape[:2] != label.shape:
            raise ValueError(f"image {im.shape} does not match label {label.shape} (expected (H, W, 3))")
    out = [torch.from_numpy(np.ascontiguousarray(((im - _MEAN) / _STD).transpose(2, 0, 1))) for im in imgs]
    return (*out, torch.from_numpy(label.astype(np.int64)))


class CropDataset(Dataset):
    """Random crop x crop training samples: each scene gives ceil(area / crop^2) crops per epoch.

    Augmentations: horizontal / vertical flips, 90-degree rotations, and for pairs the exchange of
    the two dates (p = 0.5 each). Scenes smaller than a crop are padded (image 0, label 255).
    Randomness comes from torch's generator, so a seeded DataLoader makes epochs reproducible.
    """

    def __init__(self, scenes: list[Scene], crop: int, crops_per_scene: int | None = None,
                 sizes: list[tuple[int, int]] | None = None):
        if not scenes:
            raise ValueError("CropDataset got no scenes")
        self.scenes, self.crop = scenes, crop
        if crops_per_scene is None:  # from the mean area of up to 16 evenly spaced scenes
            probe = scenes[:: max(1, len(scenes) // 16)][:16]
            sizes = sizes or [s.load()[-1].shape for s in probe]
            crops_per_scene = max(1, round(float(np.mean([h * w for h, w in sizes])) / crop ** 2))
        self.per_scene = crops_per_scene

    def __len__(self):
        return len(self.scenes) * self.per_scene

    def __getitem__(self, i):
        *imgs, label = to_tensors(self.scenes[i % len(self.scenes)].load())
        c = self.crop
        h, w = label.shape
        ph, pw = max(c - h, 0), max(c - w, 0)
        if ph or pw:
            imgs = [torch.nn.functional.pad(im, (0, pw, 0, ph)) for im in imgs]
            label = torch.nn.functional.pad(label, (0, pw, 0, ph), value=IGNORE)
            h, w = label.shape
        top = int(torch.randint(0, h - c + 1, ()))
        left = int(torch.randint(0, w - c + 1, ()))
        t = [im[:, top:top + c, left:left + c] for im in imgs] + [label[None, top:top + c, left:left + c]]
        flips = torch.rand(4)
        if flips[0] < 0.5:
            t = [x.flip(-1) for x in t]
        if flips[1] < 0.5:
            t = [x.flip(-2) for x in t]
        k = int(torch.randint(0, 4, ()))
        t = [torch.rot90(x, k, (-2, -1)) for x in t]
        if len(t) == 3 and flips[2] < 0.5:  # time exchange: change is symmetric in the two dates
            t = [t[1], t[0], t[2]]
        return (*[x.contiguous() for x in t[:-1]], t[-1][0].contiguous())


def load_splits(task: str, root: Path, labels_root: Path | None = None, val_fraction: float = 0.2,
                test_fraction: float = 0.2, split_seed: int = 0) -> dict[str, list[Scene]]:
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dense dataset root {root} does not exist")
    if task == "oscd":
        return oscd_splits(root, Path(labels_root) if labels_root else root, val_fraction, split_seed)
    if task == "levir":
        return levir_splits(root)
    if task == "spacenet":
        return spacenet_splits(root, val_fraction, test_fraction, split_seed)
    if task == "segfolder":
        return segfolder_splits(root, val_fraction, test_fraction, split_seed)
    raise ValueError(f"unknown dense task {task!r}: oscd | levir | spacenet | segfolder")
