"""Downstream encoder: checkpoint loading (strict), pos-embed resize, v3 initialisation, readouts."""
from __future__ import annotations

import pytest
import torch

from roma.config import AresConfig
from roma.models import create_model
from roma.models.downstream import build_downstream_encoder, resize_pos_embed

MODEL = "roma_micro_tiny"  # d 64, depth 6, pretrained at 96 px with patch 8 (12 x 12 grid)


def save_ckpt(path, state, name=MODEL, img_size=96, patch_size=8):
    cfg = {"name": name, "img_size": img_size, "patch_size": patch_size, "cluster_size": 4, "decoder_depth": 4}
    torch.save({"model_config": cfg, "model_name": name, "state_dict": state}, path)
    return path


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A pretraining model's encoder (ARES angle embedding included), perturbed so that every
    direction copy is distinguishable from a fresh init."""
    torch.manual_seed(1)
    enc = create_model(MODEL, ares=AresConfig(enabled=True)).encoder
    state = {k: v + 0.01 * torch.randn_like(v) if v.is_floating_point() and k != "pos_embed" else v
             for k, v in enc.state_dict().items()}
    return save_ckpt(tmp_path_factory.mktemp("ckpt") / "encoder.pt", state), state


def test_shapes_and_readouts(pretrained):
    ckpt, _ = pretrained
    x = torch.randn(2, 3, 32, 32)
    for scan in ("uni", "v3"):
        for readout in ("mean", "cls"):
            enc = build_downstream_encoder(ckpt, MODEL, img_size=32, scan=scan, readout=readout).freeze()
            with torch.no_grad():
                tokens, grid, pooled = enc.forward_tokens(x), enc.forward_grid(x), enc.forward_pooled(x)
            assert tokens.shape == (2, 16, 64) and grid.shape == (2, 64, 4, 4) and pooled.shape == (2, 64)
            assert enc.embed_dim == 64 and enc.directions == (4 if scan == "v3" else 1)
            assert torch.equal(grid.flatten(2).transpose(1, 2), tokens)  # raster order
            if readout == "mean":
                assert torch.allclose(pooled, tokens.mean(1), atol=1e-6)
            else:  # the cls token is not one of the patch tokens
                assert not torch.allclose(pooled, tokens.mean(1), atol=1e-3)


def test_loads_pretrained_weights_and_resizes_pos_embed(pretrained):
    ckpt, state = pretrained
    enc = build_downstream_encoder(ckpt, MODEL, img_size=128)  # 12x12 -> 16x16 grid
    got = enc.encoder.state_dict()
    assert torch.equal(got["layers.0.mixer.in_proj.weight"], state["layers.0.mixer.in_proj.weight"])
    assert torch.equal(got["patch_embed.weight"], state["patch_embed.weight"])
    assert got["pos_embed"].shape == (1, 256, 64)
    assert torch.allclose(got["pos_embed"], resize_pos_embed(state["pos_embed"], (12, 12), (16, 16)))
    assert enc.forward_tokens(torch.randn(1, 3, 128, 128)).shape == (1, 256, 64)


def test_resize_pos_embed_properties():
    d = 8
    const = torch.full((1, 9, d), 0.7)
    assert torch.allclose(resize_pos_embed(const, (3, 3), (5, 5)), torch.full((1, 25, d), 0.7), atol=1e-6)
    pos = torch.randn(1, 12, d)
    assert torch.equal(resize_pos_embed(pos, (3, 4), (3, 4)), pos)
    # a ramp along the width stays increasing along the width after bicubic upsampling
    ramp = torch.arange(4.0).repeat(4, 1).reshape(1, 16, 1).expand(1, 16, d)
    out = resize_pos_embed(ramp, (4, 4), (7, 7)).reshape(7, 7, d)
    assert (out[:, 1:] - out[:, :-1] > 0).all()
    with pytest.raises(ValueError, match="does not match the grid"):
        resize_pos_embed(pos, (4, 4), (5, 5))


def test_v3_init_reproduces_single_direction(pretrained):
    """Every extra direction starts as the pretrained one; with them switched off, v3 == uni."""
    ckpt, _ = pretrained
    uni = build_downstream_encoder(ckpt, MODEL, img_size=32, scan="uni").freeze()
    v3 = build_downstream_encoder(ckpt, MODEL, img_size=32, scan="v3").freeze()
    sd = v3.encoder.state_dict()
    for s in ("_b", "_c", "_c_b"):
        assert torch.equal(sd[f"layers.2.mixer.conv1d{s}.weight"], sd["layers.2.mixer.conv1d.weight"])
        assert torch.equal(sd[f"layers.2.mixer.A{s}_log"], sd["layers.2.mixer.A_log"])
        assert torch.equal(sd[f"layers.2.mixer.dt_proj{s}.bias"], sd["layers.2.mixer.dt_proj.bias"])
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref, full = uni.forward_tokens(x), v3.forward_tokens(x)
        for layer in v3.encoder.layers:
            layer.mixer.active = [""]
        only_fwd = v3.forward_tokens(x)
    assert torch.allclose(only_fwd, ref, atol=1e-5)
    assert not torch.allclose(full, ref, atol=1e-3)  # the four scans do change the output


def test_strict_loading_errors(pretrained, tmp_path):
    ckpt, state = pretrained
    extra = save_ckpt(tmp_path / "extra.pt", {**state, "head.weight": torch.zeros(3)})
    with pytest.raises(KeyError, match=r"unexpected keys \['head.weight'\]"):
        build_downstream_encoder(extra, MODEL, img_size=32)
    missing = save_ckpt(tmp_path / "missing.pt", {k: v for k, v in state.items() if k != "layers.1.norm2.bias"})
    with pytest.raises(KeyError, match=r"missing keys \['layers.1.norm2.bias'\]"):
        build_downstream_encoder(missing, MODEL, img_size=32)
    bad = dict(state)
    bad["layers.0.mlp.w1.weight"] = torch.zeros(5, 5)
    with pytest.raises(ValueError, match="layers.0.mlp.w1.weight"):
        build_downstream_encoder(save_ckpt(tmp_path / "shape.pt", bad), MODEL, img_size=32)
    with pytest.raises(ValueError, match="holds model 'roma_micro_tiny', not 'roma_micro_small'"):
        build_downstream_encoder(ckpt, "roma_micro_small", img_size=32)
    torch.save({"state_dict": state}, tmp_path / "nocfg.pt")
    with pytest.raises(ValueError, match="model_config"):
        build_downstream_encoder(tmp_path / "nocfg.pt", MODEL, img_size=32)
    with pytest.raises(FileNotFoundError):
        build_downstream_encoder(tmp_path / "absent.pt", MODEL, img_size=32)
    with pytest.raises(ValueError, match="patch_size 16"):
        build_downstream_encoder(ckpt, MODEL, img_size=32, patch_size=16)
    with pytest.raises(ValueError, match="not a multiple"):
        build_downstream_encoder(ckpt, MODEL, img_size=36)
    with pytest.raises(ValueError, match="scan"):
        build_downstream_encoder(ckpt, MODEL, img_size=32, scan="bi")


def test_random_init_is_seeded():
    x = torch.randn(1, 3, 32, 32)
    a, b, c = (build_downstream_encoder(None, MODEL, img_size=32, seed=s).freeze() for s in (0, 0, 1))
    with torch.no_grad():
        assert torch.equal(a(x), b(x))
        assert not torch.allclose(a(x), c(x))


def test_vit_baseline_loads_mae_style_checkpoint(tmp_path):
    """An MAE-format ViT checkpoint (decoder + mask token dropped) at 64 px, probed at 32 px."""
    from roma.models.vit import VisionTransformer

    torch.manual_seed(0)
    src = VisionTransformer(64, 16, 192, 12, 3)
    state = {**src.state_dict(), "mask_token": torch.zeros(1, 1, 192), "decoder_pred.weight": torch.zeros(4, 4)}
    torch.save({"model": state}, tmp_path / "mae.pth")
    for readout in ("cls", "mean"):
        enc = build_downstream_encoder(tmp_path / "mae.pth", "vit_tiny_patch16", img_size=32, readout=readout).freeze()
        assert torch.equal(enc.vit.blocks[3].attn.qkv.weight, src.blocks[3].attn.qkv.weight)
        assert torch.equal(enc.vit.pos_embed[:, 0], src.pos_embed[:, 0])  # the cls position is kept
        x = torch.randn(2, 3, 32, 32)
        with torch.no_grad():
            assert enc.forward_grid(x).shape == (2, 192, 2, 2) and enc.forward_pooled(x).shape == (2, 192)
    torch.save({"model": {**state, "blocks.0.extra": torch.zeros(1)}}, tmp_path / "bad.pth")
    with pytest.raises(KeyError, match="blocks.0.extra"):
        build_downstream_encoder(tmp_path / "bad.pth", "vit_tiny_patch16", img_size=32)
    with pytest.raises(ValueError, match="no scan directions"):
        build_downstream_encoder(None, "vit_tiny_patch16", img_size=32, scan="v3")


def test_loads_encoder_exported_by_pretraining(tmp_path):
    """The checkpoint writer of roma.train (ModelConfig dict, ARES angle embedding) -> downstream."""
    from roma.config import ModelConfig
    from roma.train.checkpoint import export_encoder

    cfg = ModelConfig(name=MODEL, img_size=96, patch_size=8, decoder_depth=2, decoder_dim=128, decoder_heads=4)
    model = create_model(MODEL, ares=AresConfig(enabled=True), img_size=96, patch_size=8, decoder_depth=2)
    path = export_encoder(tmp_path, model.encoder, MODEL, {k: getattr(cfg, k) for k in cfg.__dataclass_fields__})
    enc = build_downstream_encoder(path, MODEL, img_size=48, scan="v3").freeze()
    assert len(enc.encoder.tap_norms) == 2  # one tap per decoder layer, as pretrained
    assert torch.equal(enc.encoder.tap_norms[-1].weight, model.encoder.tap_norms[-1].weight)
    assert enc.forward_pooled(torch.randn(1, 3, 48, 48)).shape == (1, 64)
