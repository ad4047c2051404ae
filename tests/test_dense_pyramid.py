"""Simple feature pyramid: strides 4/8/16/32 from patch-16 and patch-8 grids, and from the encoder."""
import pytest
import torch

from roma.eval.dense.pyramid import SimplePyramid
from roma.models.downstream import build_downstream_encoder


@pytest.mark.parametrize("patch", [16, 8])
@pytest.mark.parametrize("size", [64, 128, 256])
def test_pyramid_shapes(patch, size):
    d = 8
    pyr = SimplePyramid(d, patch_size=patch)
    grid = torch.randn(2, d, size // patch, size // patch)
    feats = pyr(grid)
    assert [tuple(f.shape) for f in feats] == [(2, d, size // s, size // s) for s in (4, 8, 16, 32)]


def test_patch16_matches_vitdet_layout():
    pyr = SimplePyramid(8, patch_size=16)
    kinds = [[type(m).__name__ for m in (lvl if isinstance(lvl, torch.nn.Sequential) else [lvl])] for lvl in pyr.levels]
    assert kinds == [["ConvTranspose2d", "LayerNorm2d", "GELU", "ConvTranspose2d"], ["ConvTranspose2d"],
                     ["Identity"], ["MaxPool2d"]]
    no_norm = SimplePyramid(8, patch_size=16, norm=False)
    assert [type(m).__name__ for m in no_norm.levels[0]] == ["ConvTranspose2d", "GELU", "ConvTranspose2d"]


def test_pyramid_on_micro_encoder():
    enc = build_downstream_encoder(None, "roma_micro_tiny", img_size=64, scan="uni")  # patch 8, d 64
    feats = SimplePyramid(enc.embed_dim, enc.patch_size)(enc.forward_grid(torch.randn(1, 3, 64, 64)))
    assert [tuple(f.shape[-2:]) for f in feats] == [(16, 16), (8, 8), (4, 4), (2, 2)]


def test_bad_inputs():
    with pytest.raises(ValueError, match="power-of-two"):
        SimplePyramid(8, patch_size=12)
    with pytest.raises(ValueError, match="expects"):
        SimplePyramid(8, patch_size=16)(torch.randn(1, 4, 4, 4))
