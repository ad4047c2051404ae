"""ARES: texture scores, region rule, rotation without empty corners, determinism, input checks."""
import dataclasses
import math

import numpy as np
import pytest
from skimage.feature import local_binary_pattern

from roma.ares import Ares, AresResult, angle_bin, grayscale, lbp_codes, rotate_region, select_region
from roma.ares.descriptors import lbp_entropy
from roma.ares.rotate import margin
from roma.config import AresConfig

P = 16
DESCRIPTORS = ("lbp", "hog", "wavelet")


def _textured_square(size=192, top=3, left=5, side=4, flat=200, seed=0):
    """Flat image with one patch-aligned square of random texture (values in [100, 255])."""
    rng = np.random.default_rng(seed)
    img = np.full((size, size, 3), flat, dtype=np.uint8)
    y, x, s = top * P, left * P, side * P
    img[y:y + s, x:x + s] = rng.integers(100, 256, (s, s, 3), dtype=np.uint8)
    return img


# ----------------------------------------------------------------------------- descriptors
@pytest.mark.parametrize("kind", ["noise", "flat", "ramp", "near_ties"])
@pytest.mark.parametrize("shape", [(40, 56), (7, 3), (1, 1)])
def test_lbp_codes_equal_skimage(kind, shape):
    rng = np.random.default_rng(1)
    gray = {"noise": rng.integers(0, 256, shape), "flat": np.full(shape, 200),
            "ramp": np.add.outer(np.arange(shape[0]), 3 * np.arange(shape[1])) % 256,
            "near_ties": rng.integers(100, 103, shape)}[kind].astype(np.uint8)
    expected = local_binary_pattern(np.pad(gray, 1, mode="edge"), 8, 1)[1:-1, 1:-1]
    np.testing.assert_array_equal(lbp_codes(gray), expected)


def test_lbp_entropy_matches_per_patch_histograms():
    rng = np.random.default_rng(2)
    codes = rng.integers(0, 256, (48, 32)).astype(np.uint8)
    codes[:16, :16] = 7  # a constant patch: entropy 0
    got = lbp_entropy(codes, 16)
    assert got.shape == (3, 2) and got[0, 0] == 0.0
    for i in range(3):
        for j in range(2):
            hist = np.bincount(codes[i * 16:(i + 1) * 16, j * 16:(j + 1) * 16].ravel(), minlength=256)
            q = hist[hist > 0] / 256
            assert got[i, j] == pytest.approx(-(q * np.log(q)).sum(), abs=1e-12)


@pytest.mark.parametrize("descriptor", DESCRIPTORS)
def test_scores_flat_zero_and_texture_highest(descriptor):
    ares = Ares(AresConfig(descriptor=descriptor), P)
    flat = ares.scores(np.full((64, 96), 123, np.uint8))
    assert flat.shape == (4, 6) and np.all(flat == 0)  # edge padding: border patches too
    scores = ares.scores(grayscale(_textured_square()))
    inside = scores[3:7, 5:9]
    outside = np.delete(scores.ravel(), np.ravel_multi_index(np.nonzero(np.pad(
        np.ones((4, 4)), ((3, 5), (5, 3)))), scores.shape))
    assert inside.min() > outside.max()


# ----------------------------------------------------------------------------- region rule
def _brute_force_region(scores, sizes):
    """The rule, written the slow obvious way."""
    gh, gw = scores.shape
    ti, tj = np.unravel_index(np.argmax(scores), scores.shape)
    fitting = sorted((s for s in sizes if s <= min(gh, gw)), reverse=True)
    for s in fitting:
        best = None
        for r in range(gh - s + 1):
            for c in range(gw - s + 1):
                if r <= ti < r + s and c <= tj < c + s:
                    m = scores[r:r + s, c:c + s].mean()
                    if best is None or m > best[0] + 1e-12:
                        best = (m, r, c)
        if best[0] >= scores.mean() - 1e-9 or s == fitting[-1]:
            return best[1], best[2], s


@pytest.mark.parametrize("seed", range(40))
def test_region_contains_top_patch_and_passes_mean_rule(seed):
    rng = np.random.default_rng(seed)
    gh, gw = rng.integers(2, 14, size=2)
    scores = rng.gamma(rng.uniform(0.2, 3.0), size=(gh, gw))
    sizes = (6, 4, 2)
    top, left, size = select_region(scores, sizes)
    ti, tj = np.unravel_index(np.argmax(scores), scores.shape)
    assert top <= ti < top + size and left <= tj < left + size
    assert 0 <= top and top + size <= gh and 0 <= left and left + size <= gw
    smallest = min(s for s in sizes if s <= min(gh, gw))
    assert size == smallest or scores[top:top + size, left:left + size].mean() >= scores.mean() - 1e-9
    assert (top, left, size) == _brute_force_region(scores, sizes)


def test_region_falls_back_to_smallest_and_rejects_unfit_sizes():
    scores = np.zeros((12, 12))
    scores[4:, 4:] = 2.9  # the mass lies far from the top patch: no window around it reaches the mean
    scores[0, 0] = 3.0
    assert scores[:2, :2].mean() < scores.mean()
    assert select_region(scores, (6, 4, 2)) == (0, 0, 2)
    with pytest.raises(ValueError, match="fits"):
        select_region(np.ones((3, 3)), (6, 4))


@pytest.mark.parametrize("descriptor", DESCRIPTORS)
def test_textured_square_is_selected(descriptor):
    img = _textured_square(top=3, left=5, side=4)
    exact = Ares(AresConfig(descriptor=descriptor, region_sizes=(4, 2)), P)
    assert exact(img, np.random.default_rng(0)).region == (3, 5, 4)
    top, left, size = Ares(AresConfig(descriptor=descriptor), P)(img, np.random.default_rng(0)).region
    assert size == 6 and top <= 3 and top + 6 >= 7 and left <= 5 and left + 6 >= 9  # holds the square


# ----------------------------------------------------------------------------- rotation
@pytest.mark.parametrize("square", [(3, 5), (0, 0), (8, 8)])  # interior, top-left and bottom-right border
def test_rotated_region_has_no_fill_and_rest_is_untouched(square):
    img = _textured_square(top=square[0], left=square[1], side=4)
    before = img.copy()
    for seed in range(5):
        res = Ares(AresConfig(), P)(img, np.random.default_rng(seed))
        assert isinstance(res, AresResult) and res.region[2] > 0 and res.angle != 0.0
        assert res.image.dtype == np.uint8 and res.image.shape == img.shape
        assert res.image.min() >= 100  # a fill value (0) blended in anywhere would go below 100
        t, l, s = (v * P for v in res.region)
        inside = np.zeros(img.shape[:2], bool)
        inside[t:t + s, l:l + s] = True
        np.testing.assert_array_equal(res.image[~inside], img[~inside])
        assert not np.array_equal(res.image[inside], img[inside])
    np.testing.assert_array_equal(img, before)  # input untouched


def test_rotation_by_90_is_rot90_of_the_region():
    img = _textured_square(top=2, left=6, side=4)
    res = Ares(AresConfig(angles=(90.0,), region_sizes=(4,)), P)(img, np.random.default_rng(0))
    assert res.region == (2, 6, 4) and res.angle == 90.0  # rows/columns not swapped
    np.testing.assert_array_equal(res.image[32:96, 96:160], np.rot90(img[32:96, 96:160]))  # counter-clockwise


def test_rotate_region_corner_uses_reflection_not_fill():
    img = np.full((32, 32, 3), 50, np.uint8)
    out = rotate_region(img, (0, 0, 32), 30.0)  # crop reaches past every border
    assert np.all(out == 50)
    assert margin(96) >= math.ceil(96 * (math.sqrt(2) - 1) / 2)


# ----------------------------------------------------------------------------- randomness, p, angles
def test_same_seed_same_output_and_seeds_differ():
    img = _textured_square()
    ares = Ares(AresConfig(), P)
    a, b = ares(img, np.random.default_rng(7)), ares(img, np.random.default_rng(7))
    assert a.region == b.region and a.angle == b.angle and np.array_equal(a.image, b.image)
    c = ares(img, np.random.default_rng(8))
    assert c.angle != a.angle and not np.array_equal(c.image, a.image)


def test_p_zero_and_disabled_leave_image_unchanged():
    img = _textured_square()
    for cfg in (AresConfig(p=0.0), AresConfig(enabled=False)):
        res = Ares(cfg, P)(img, np.random.default_rng(0))
        assert res.region == (0, 0, 0) and res.angle == 0.0
        assert res.image is not img and np.array_equal(res.image, img)


def test_p_half_applies_about_half_the_time():
    ares = Ares(AresConfig(p=0.5), P)
    img = _textured_square(size=64, top=1, left=1, side=2)
    applied = sum(ares(img, np.random.default_rng(s)).region[2] > 0 for s in range(200))
    assert 70 < applied < 130


def test_discrete_angles_respected_and_continuous_in_range():
    img = _textured_square(size=64, top=1, left=1, side=2)
    discrete = Ares(AresConfig(angles=(-30.0, 15.0, 60.0)), P)
    seen = {discrete(img, np.random.default_rng(s)).angle for s in range(40)}
    assert seen == {-30.0, 15.0, 60.0}
    cont = Ares(AresConfig(max_angle=10.0), P)
    angles = [cont(img, np.random.default_rng(s)).angle for s in range(40)]
    assert all(-10.0 <= a <= 10.0 for a in angles) and len(set(angles)) == 40


def test_angle_bin():
    cfg = AresConfig(max_angle=45.0, angle_bins=8)
    assert [angle_bin(a, cfg) for a in (-45.0, -33.76, -33.74, 0.0, 44.9, 45.0)] == [0, 0, 1, 4, 7, 7]
    disc = AresConfig(angles=(-90.0, 0.0, 90.0))
    assert [angle_bin(a, disc) for a in (-90.0, 0.0, 90.0, 80.0)] == [0, 1, 2, 2]


def test_angle_bin_matches_model_embedding():
    torch = pytest.importorskip("torch")
    from roma.models.encoder import AngleEmbedding

    for cfg in (AresConfig(max_angle=45.0, angle_bins=8), AresConfig(max_angle=30.0, angle_bins=5),
                AresConfig(angles=(-45.0, 0.0, 30.0, 90.0))):
        emb = AngleEmbedding(4, "binned", cfg.angle_bins, cfg.max_angle, tuple(cfg.angles))
        angles = np.random.default_rng(0).uniform(-cfg.max_angle, cfg.max_angle, 200).astype(np.float32)
        angles = np.concatenate([angles, np.array(cfg.angles or [-cfg.max_angle, cfg.max_angle], np.float32)])
        model_bins = emb.bin(torch.from_numpy(angles)).tolist()
        assert model_bins == [angle_bin(float(a), cfg) for a in angles]


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("image, match", [
    (np.zeros((190, 192, 3), np.uint8), "multiple of the patch size"),
    (np.zeros((8, 8, 3), np.uint8), "multiple of the patch size"),
    (np.zeros((192, 192, 3), np.float32), "uint8"),
    (np.zeros((192, 192), np.uint8), r"\(H, W, 3\)"),
    (np.zeros((192, 192, 4), np.uint8), r"\(H, W, 3\)"),
    ([[0]], r"\(H, W, 3\)"),
])
def test_bad_image_raises(image, match):
    with pytest.raises(ValueError, match=match):
        Ares(AresConfig(), P)(image, np.random.default_rng(0))


def test_bad_gray_rng_and_config_raise():
    ares = Ares(AresConfig(), P)
    with pytest.raises(ValueError, match="patch size"):
        ares.scores(np.zeros((33, 32), np.uint8))
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        ares.scores(np.zeros((32, 32, 3), np.uint8))
    with pytest.raises(TypeError, match="Generator"):
        ares(np.zeros((32, 32, 3), np.uint8), 0)
    bad = {"descriptor": "sift", "region_sizes": (), "p": 1.5, "target": "both", "max_angle": 0.0}
    for key, value in bad.items():
        with pytest.raises(ValueError, match=f"ares.{key}"):
            Ares(dataclasses.replace(AresConfig(), **{key: value}), P)
    with pytest.raises(ValueError, match="even patch size"):
        Ares(AresConfig(descriptor="wavelet"), 15)


def test_non_square_image():
    img = np.full((96, 160, 3), 90, np.uint8)
    img[16:48, 112:144] = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    res = Ares(AresConfig(region_sizes=(2,)), P)(img, np.random.default_rng(0))
    assert res.region == (1, 7, 2) and res.image.shape == img.shape


def test_benchmark_smoke(tmp_path, capsys, monkeypatch):
    import json
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1]))
    from benchmarks import ares as bench

    monkeypatch.setattr(bench, "DATA", tmp_path / "absent")  # synthetic images: no data needed
    out = tmp_path / "ares.json"
    assert bench.main(["--images", "2", "--repeats", "1", "--size", "64", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "images/s/core" in printed and "synthetic" in printed
    results = json.loads(out.read_text())["results"]
    assert [r["descriptor"] for r in results] == ["lbp", "hog", "wavelet", "skimage_lbp_reference"]
    assert all(r["ms_per_image"] > 0 for r in results)
