"""Linear probe: splits, the head's training, augmentations, and end-to-end runs on real AID."""
from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

import roma.eval.features as features_mod
from roma.config import ModelConfig, ProbeConfig
from roma.eval import metric_name, run_probe
from roma.eval.augment import RAND_OPS, EvalTransform, RandAugment, TrainTransform, random_erasing
from roma.eval.probe import select_and_fit
from roma.eval.splits import load_or_create_split, load_split, make_split, scan_folder

MICRO = ModelConfig(name="roma_micro_tiny", img_size=96, patch_size=8)


def _toy_folder(root, counts=(5, 7, 4)):
    rng = np.random.default_rng(0)
    for c, n in enumerate(counts):
        (root / f"class{c}").mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(root / f"class{c}/img{i}.png")
    return root


# ----------------------------------------------------------------------------- splits
def test_split_on_toy_folder_is_stratified_and_reused(tmp_path):
    ds = scan_folder(_toy_folder(tmp_path / "toy"))
    assert ds.classes == ("class0", "class1", "class2") and len(ds) == 16
    split = load_or_create_split(ds, tmp_path / "splits", 0.5, seed=3, val_fraction=0.34)
    parts = [set(split.train), set(split.val), set(split.test)]
    assert sum(map(len, parts)) == len(ds) and set.union(*parts) == set(range(len(ds)))
    train_per_class = Counter(ds.labels[i] for i in split.train_full)
    assert train_per_class == {0: 2, 1: 4, 2: 2}  # round(0.5 * n) per class (5 -> 2 by banker's rounding)
    assert all(Counter(ds.labels[i] for i in split.test)[c] >= 1 for c in range(3))
    # reused: the file wins over a different seed's recomputation, and loads identically
    assert load_or_create_split(ds, tmp_path / "splits", 0.5, seed=3, val_fraction=0.34) == split
    assert make_split(ds, 0.5, seed=4, val_fraction=0.34) != make_split(ds, 0.5, seed=3, val_fraction=0.34)
    with pytest.raises(ValueError, match="train_ratio=0.5, requested 0.2"):
        load_split(split.path, ds, train_ratio=0.2)
    doc = json.loads(split.path.read_text())
    doc["test"].append("class0/ghost.png")
    split.path.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="ghost.png"):
        load_or_create_split(ds, tmp_path / "splits", 0.5, seed=3, val_fraction=0.34)
    with pytest.raises(ValueError, match="train_ratio"):
        make_split(ds, 1.0, seed=0)


def test_splits_on_aid(aid_root, tmp_path):
    ds = scan_folder(aid_root)
    assert len(ds.classes) == 30 and len(ds) == 10000
    per_class = Counter(ds.labels)
    for ratio in (0.2, 0.5):
        split = load_or_create_split(ds, tmp_path, ratio, seed=0)
        tr, va, te = set(split.train), set(split.val), set(split.test)
        assert not (tr & va or tr & te or va & te) and len(tr | va | te) == 10000
        full = Counter(ds.labels[i] for i in split.train_full)
        val = Counter(ds.labels[i] for i in split.val)
        for c, n in per_class.items():
            assert full[c] == round(ratio * n)
            assert val[c] == round(0.1 * full[c])
        assert load_or_create_split(ds, tmp_path, ratio, seed=0) == split  # reused from the file
    assert json.loads((tmp_path / "split_tr50_val10_seed0.json").read_text())["train"][0].count("/") == 1


# ----------------------------------------------------------------------------- head training
def test_select_and_fit_learns_separable_features():
    g = torch.Generator().manual_seed(0)
    n, d, c = 600, 16, 5
    centers = torch.randn(c, d, generator=g) * 3
    y = torch.randint(0, c, (n,), generator=g)
    x = centers[y] + torch.randn(n, d, generator=g) + 10.0  # offset: the BatchNorm must remove it
    res = select_and_fit(x, y, range(0, 300), range(300, 400), range(400, 600), c, lrs=[1e-3, 1e-2],
                         epochs=20, batch_size=64, weight_decay=0.05, seed=0, eval_every=5)
    assert res.test_acc > 90.0 and res.val_acc > 90.0
    assert res.lr in (1e-3, 1e-2) and res.epochs in (5, 10, 15, 20)
    again = select_and_fit(x, y, range(0, 300), range(300, 400), range(400, 600), c, lrs=[1e-3, 1e-2],
                           epochs=20, batch_size=64, weight_decay=0.05, seed=0, eval_every=5)
    assert again == res  # seeded: reproducible on CPU


# ----------------------------------------------------------------------------- augmentations
def test_augmentations_shapes_and_determinism():
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (60, 80, 3), dtype=np.uint8))
    for name, op in RAND_OPS.items():
        out = op(img, 9.0, random.Random(0))
        assert out.size == img.size and out.mode == "RGB", name
    ra = RandAugment()
    assert np.array_equal(np.asarray(ra(img, random.Random(5))), np.asarray(ra(img, random.Random(5))))
    t = TrainTransform(32)
    a, b = t(img, random.Random(1)), t(img, random.Random(1))
    assert a.shape == (3, 32, 32) and torch.equal(a, b)
    assert not torch.equal(a, t(img, random.Random(2)))
    assert EvalTransform(32)(img).shape == (3, 32, 32)
    x = torch.zeros(3, 32, 32)
    random_erasing(x, random.Random(0), p=1.0)
    assert 0 < (x != 0).float().mean() < 0.5  # one rectangle of noise, not the whole image


def test_timm_randaugment_is_used_where_timm_imports_and_stays_seeded(monkeypatch):
    """timm is never installed here (it needs a matching torchvision): a stand-in module with timm's
    API and its use of the global RNGs checks the wiring, the seeding from rng and the restore."""
    import sys
    import types

    from roma.eval import augment

    made = []

    def rand_augment_transform(config, hparams):
        made.append((config, hparams))
        # like timm's ops: the global random (magnitudes, probabilities) and numpy.random (op choice)
        return lambda img: img.rotate(random.uniform(-30, 30) + float(np.random.uniform(-1, 1)))

    mod = types.ModuleType("timm.data.auto_augment")
    mod.rand_augment_transform = rand_augment_transform
    for name, m in (("timm", types.ModuleType("timm")), ("timm.data", types.ModuleType("timm.data")),
                    ("timm.data.auto_augment", mod)):
        monkeypatch.setitem(sys.modules, name, m)
    assert augment._timm_importable()
    monkeypatch.setattr(augment, "RANDAUG_SOURCE", "timm")
    ra = augment.rand_augment()
    assert isinstance(ra, augment.TimmRandAugment) and made == [("rand-m9-mstd0.5-inc1", {"img_mean": (124, 116, 104)})]
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 40, 3), dtype=np.uint8))
    random.seed(123)
    before = random.random(), random.getstate()
    a = np.asarray(ra(img, random.Random(7)))
    assert random.getstate() == before[1]  # the global stream is left as it was
    assert np.array_equal(a, np.asarray(ra(img, random.Random(7))))  # the sample's rng decides
    assert not np.array_equal(a, np.asarray(ra(img, random.Random(8))))
    assert isinstance(TrainTransform(32).randaug, augment.TimmRandAugment)
    monkeypatch.setattr(augment, "RANDAUG_SOURCE", "roma")
    assert type(TrainTransform(32).randaug) is RandAugment


# ----------------------------------------------------------------------------- end to end on AID
def test_metric_names():
    assert metric_name("aid", 0.5) == "aid_oa_tr50" and metric_name("ucm", 0.2) == "ucm_oa_tr20"


def test_fast_probe_beats_chance_on_aid(aid_root, tmp_path, monkeypatch):
    """Random-init micro encoder, 30 images per class at 32 px: well above chance (1/30 = 3.3%;
    with 450 test images chance scores 3.3 +- 0.9)."""
    cfg = ProbeConfig(dataset="aid", root=str(aid_root), img_size=32, max_per_class=30, epochs=30,
                      batch_size=64, seeds=(0, 1), eval_every=5)
    metrics = run_probe(None, cfg, MICRO, tmp_path, "cpu")
    assert set(metrics) == {"aid_oa_tr50", "aid_oa_tr50_std"}
    assert metrics["aid_oa_tr50"] > 12.0, metrics
    report = json.loads((tmp_path / "probe_aid.json").read_text())
    assert report["ratios"]["aid_oa_tr50"]["n_test"] == 450
    # second run: features from the cache (extraction would fail), same numbers
    monkeypatch.setattr(features_mod, "extract_features", lambda *a, **k: pytest.fail("cache not used"))
    monkeypatch.setattr("roma.eval.classification.extract_features", features_mod.extract_features)
    assert run_probe(None, cfg, MICRO, tmp_path, "cpu") == metrics


def test_full_protocol_runs_on_aid(aid_root, tmp_path):
    """The paper's recipe end to end with tiny settings (the real run is 200 epochs at 224 px)."""
    cfg = ProbeConfig(dataset="aid", root=str(aid_root), protocol="full", img_size=32, max_per_class=6,
                      epochs=2, batch_size=32, eval_every=1, train_ratios=(0.5,), scan="v3")
    metrics = run_probe(None, cfg, MICRO, tmp_path, "cpu")
    assert 0.0 <= metrics["aid_oa_tr50"] <= 100.0
    run = json.loads((tmp_path / "probe_aid.json").read_text())["ratios"]["aid_oa_tr50"]["runs"][0]
    assert run["epochs"] in (1, 2) and run["last_val_acc"] is not None


def test_bad_probe_config(tmp_path):
    with pytest.raises(ValueError, match="root is empty"):
        run_probe(None, ProbeConfig(), MICRO, tmp_path, "cpu")
    with pytest.raises(ValueError, match="protocol"):
        run_probe(None, replace(ProbeConfig(), root=str(tmp_path), protocol="slow"), MICRO, tmp_path, "cpu")
