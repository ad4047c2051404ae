"""Dense loaders: OSCD city folders, LEVIR-CD-style folders, image/mask folders, training crops."""
import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from roma.eval.dense.data import CropDataset, Scene, load_splits, to_tensors

TRAIN = ["aguasclaras", "bercy", "bordeaux", "nantes", "paris"]
TEST = ["brasilia", "montpellier"]


def make_oscd(root, shape=(30, 40)):
    rng = np.random.default_rng(0)
    for city in TRAIN + TEST:
        for folder in ("imgs_1_rect", "imgs_2_rect"):
            (root / city / folder).mkdir(parents=True)
            for band in ("B02", "B03", "B04", "B08"):
                tifffile.imwrite(root / city / folder / f"{band}.tif", rng.integers(0, 3000, shape, np.uint16))
        (root / city / "cm").mkdir()
        cm = np.zeros(shape, np.uint8)
        cm[5:10, 5:15] = 255
        Image.fromarray(cm).save(root / city / "cm" / "cm.png")
    (root / "train.txt").write_text(",".join(TRAIN))
    (root / "test.txt").write_text(",".join(TEST) + "\n")


def test_oscd_splits_and_scene(tmp_path):
    make_oscd(tmp_path)
    splits = load_splits("oscd", tmp_path, val_fraction=0.2, split_seed=0)
    assert sorted(sc.name for sc in splits["test"]) == TEST
    assert len(splits["val"]) == 1 and len(splits["train"]) == 4
    assert sorted(sc.name for sc in splits["train"] + splits["val"]) == sorted(TRAIN)
    a, b, y = splits["test"][0].load()
    assert a.shape == b.shape == (30, 40, 3) and y.shape == (30, 40)
    assert 0 <= min(a.min(), b.min()) and max(a.max(), b.max()) <= 1
    assert y.sum() == 50 and set(np.unique(y)) == {0, 1}
    # the red channel is B04 of date 1 (same stretch as date 2)
    raw = tifffile.imread(tmp_path / TEST[0] / "imgs_1_rect" / "B04.tif").astype(float)
    assert np.corrcoef(raw.ravel(), a[..., 0].ravel())[0, 1] > 0.95


def test_oscd_missing_label_is_named(tmp_path):
    make_oscd(tmp_path)
    (tmp_path / "paris" / "cm" / "cm.png").unlink()
    splits = load_splits("oscd", tmp_path)
    scene = next(sc for v in splits.values() for sc in v if sc.name == "paris")
    with pytest.raises(FileNotFoundError, match="paris/cm/cm.png"):
        scene.load()


def make_pairs(root, names, size=24):
    rng = np.random.default_rng(1)
    for d in ("A", "B", "label"):
        (root / d).mkdir(parents=True, exist_ok=True)
    for n in names:
        for d in ("A", "B"):
            Image.fromarray(rng.integers(0, 255, (size, size, 3), np.uint8)).save(root / d / n)
        Image.fromarray((rng.random((size, size)) > 0.8).astype(np.uint8) * 255).save(root / "label" / n)


def test_levir_split_sources(tmp_path):
    make_pairs(tmp_path / "p", ["train_1.png", "train_2.png", "val_1.png", "test_1.png"])
    s = load_splits("levir", tmp_path / "p")
    assert [[sc.name for sc in s[k]] for k in ("train", "val", "test")] == [["train_1.png", "train_2.png"],
                                                                          ["val_1.png"], ["test_1.png"]]
    make_pairs(tmp_path / "l", ["a.png", "b.png", "c.png"])
    (tmp_path / "l" / "list").mkdir()
    for k, n in (("train", "a.png\nb.png\n"), ("val", "c.png"), ("test", "a.png")):
        (tmp_path / "l" / "list" / f"{k}.txt").write_text(n)
    s = load_splits("levir", tmp_path / "l")
    assert [sc.name for sc in s["train"]] == ["a.png", "b.png"]
    a, b, y = s["val"][0].load()
    assert a.shape == (24, 24, 3) and y.dtype == np.uint8 and y.max() == 1
    make_pairs(tmp_path / "n", ["x.png"])
    with pytest.raises(ValueError, match="no split found"):
        load_splits("levir", tmp_path / "n")


def test_segfolder_seeded_split(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    for i in range(10):
        Image.fromarray(np.full((8, 8, 3), i, np.uint8)).save(tmp_path / "images" / f"t{i}.jpg")
        Image.fromarray(np.eye(8, dtype=np.uint8)).save(tmp_path / "masks" / f"t{i}.png")  # a 0/1 mask
    s = load_splits("segfolder", tmp_path, val_fraction=0.1, test_fraction=0.3)
    assert [len(s[k]) for k in ("train", "val", "test")] == [6, 1, 3]
    img, mask = s["train"][0].load()
    assert mask.sum() == 8


def test_crop_dataset_pads_and_augments_consistently():
    img = np.random.default_rng(0).random((10, 12, 3)).astype(np.float32)
    label = (img[..., 0] > 0.5).astype(np.uint8)
    ds = CropDataset([Scene("s", lambda: (img, img.copy(), label))], crop=16)
    assert len(ds) == 1
    torch.manual_seed(0)
    for _ in range(8):
        a, b, y = ds[0]
        assert a.shape == b.shape == (3, 16, 16) and y.shape == (16, 16)
        assert (y == 255).sum() == 16 * 16 - 10 * 12  # padding is ignored
        assert torch.equal(a, b)  # both dates get the same geometric transform
        # label follows the image: where the label is 1 the (normalised) red channel is high
        red = a[0] * 0.229 + 0.485
        assert ((red > 0.5) == (y == 1))[y != 255].all()


def test_to_tensors_checks_shapes():
    with pytest.raises(ValueError, match="does not match label"):
        to_tensors((np.zeros((4, 4, 3), np.float32), np.zeros((5, 4), np.uint8)))
