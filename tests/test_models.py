"""The RoMA model: registry sizes, causality, masks, losses, MSP leakage, state dicts."""
import math

import pytest
import torch

from roma.config import AresConfig, MspConfig
from roma.models import count_params, create_model, list_models
from roma.models.decoder import block_layout, cluster_of
from roma.models.encoder import cluster_order, column_major_perm, tap_layers
from roma.models.pretrain import normalize_last, patchify
from roma.models.registry import RELEASED_ENCODER_PARAMS


def _micro(**kw):
    torch.manual_seed(0)
    return create_model("roma_micro_tiny", **kw).eval()


@pytest.mark.parametrize("name", sorted(RELEASED_ENCODER_PARAMS))
def test_encoder_params_match_released_code(name):
    with torch.device("meta"):  # no memory, no init cost: only shapes
        model = create_model(name)
    n = count_params(model.encoder)
    assert abs(n - RELEASED_ENCODER_PARAMS[name]) / RELEASED_ENCODER_PARAMS[name] < 0.01, n


@pytest.mark.parametrize("name", list_models())
def test_every_registered_model_runs_forward_backward(name):
    # the large sizes at a small resolution keep this fast; geometry stays 3x3 clusters or more
    small = {"roma_base": 128, "roma_large": 128, "roma_small": 128, "roma_tiny": 128}  # 8x8 patches, 4 clusters
    model = create_model(name, img_size=small.get(name), msp=MspConfig(scales=(2,)),
                         ares=AresConfig(angle_embed="binned"))
    p = model.patch_size
    img = model.encoder.img_size
    x = torch.randn(2, 3, img, img)
    region = torch.tensor([[0, 0, 2], [0, 0, 0]])
    out = model(x, region=region, angle=torch.tensor([30.0, 0.0]))
    out["loss"].backward()
    assert math.isfinite(out["loss"].item()) and {"loss", "loss_token", "loss_block_s2"} <= set(out)
    assert all(q.grad is not None for n_, q in model.named_parameters() if "block_heads" not in n_ or "2" in n_)
    assert img % p == 0


def test_cluster_order_and_mask():
    order = cluster_order(4, 4, 2)
    assert order.tolist() == [0, 1, 4, 5, 2, 3, 6, 7, 8, 9, 12, 13, 10, 11, 14, 15]
    model = _micro()
    mask = model.decoder.mask  # (queries, encoder tokens)
    c2 = 16
    assert mask.shape == (8 * c2, 8 * c2)
    expect = torch.tril(torch.ones(8, 8, dtype=torch.bool)).repeat_interleave(c2, 0).repeat_interleave(c2, 1)
    assert torch.equal(mask, expect)


def test_column_major_perm_keeps_cls():
    assert column_major_perm(2, 3).tolist() == [0, 3, 1, 4, 2, 5]
    assert column_major_perm(2, 2, cls_index=2).tolist() == [0, 3, 2, 1, 4]


def test_taps():
    assert tap_layers(12) == [6, 8, 10, 12]
    assert tap_layers(24) == [12, 16, 20, 24]


def test_causality_token_predictions():
    model = _micro()
    x = torch.randn(2, 3, 96, 96)
    base = model.predictions(x)["token"]
    p, c = 8, 4
    for k in range(9):  # perturb cluster k; predictions of clusters <= k must not move
        cy, cx = divmod(k, 3)
        x2 = x.clone()
        x2[:, :, cy * c * p:(cy + 1) * c * p, cx * c * p:(cx + 1) * c * p] += torch.randn(2, 3, c * p, c * p)
        pred = model.predictions(x2)["token"]  # row i predicts cluster i + 1
        diff = (pred - base).abs().amax(dim=(0, 2)).view(8, 16).amax(1)
        assert torch.all(diff[:k] == 0), (k, diff)
        if k < 8:
            assert diff[k:].max() > 0  # later clusters do see it


def test_msp_blocks_do_not_leak():
    model = _micro(msp=MspConfig(scales=(2, 4, 6)))
    x = torch.randn(1, 3, 96, 96)
    base = model.predictions(x)
    p = 8
    for s in (2, 4, 6):
        idx = model.decoder.block_index(s)
        for b in range(0, idx.shape[0], 3 if s == 2 else 1):  # every third of the 32 small blocks
            r = idx[b, 0].item()  # a pixel inside the block's first patch ... and its last patch
            for pos in (idx[b, 0].item(), idx[b, -1].item()):
                gy, gx = divmod(pos, 12)
                x2 = x.clone()
                x2[:, :, gy * p + 3, gx * p + 5] += 5.0
                pred = model.predictions(x2)[f"block_{s}"]
                assert torch.equal(pred[:, b], base[f"block_{s}"][:, b]), (s, b, r)


def test_block_layout_skips_blocks_touching_first_cluster():
    idx, first = block_layout(12, 12, 4, 6)
    assert idx.shape == (3, 36) and first.tolist() == [1, 3, 4]
    assert cluster_of(12, 12, 4)[idx[0]].min() == 1
    with pytest.raises(ValueError, match="does not divide"):
        block_layout(8, 8, 4, 6)


def test_loss_zero_for_perfect_predictions(monkeypatch):
    model = _micro(msp=MspConfig(scales=(2, 6)))
    x = torch.randn(2, 3, 96, 96)
    patches = patchify(x, 8)
    perfect = {"token": normalize_last(patches)[:, model.order[16:]]}
    for s in (2, 6):
        perfect[f"block_{s}"] = normalize_last(patches[:, model.decoder.block_index(s)], dims=2)
    monkeypatch.setattr(model.decoder, "forward", lambda taps: perfect)
    out = model(x)
    assert out["loss"].item() == pytest.approx(0.0, abs=1e-10)
    # shuffling block predictions across blocks is not perfect any more
    shuffled = dict(perfect, block_6=perfect["block_6"].flip(1))
    monkeypatch.setattr(model.decoder, "forward", lambda taps: shuffled)
    assert model(x)["loss_block_s6"].item() > 0.5


def test_target_normalisation_matches_arm():
    t = torch.randn(2, 5, 12)
    n = normalize_last(t)
    expect = (t - t.mean(-1, keepdim=True)) / (t.var(-1, unbiased=True, keepdim=True) + 1e-6).sqrt()
    torch.testing.assert_close(n, expect)
    assert patchify(torch.arange(2 * 3 * 4 * 4.0).view(2, 3, 4, 4), 2).shape == (2, 4, 12)


def test_angle_embedding_lands_on_region_only():
    model = _micro(ares=AresConfig(angle_embed="binned", angle_bins=8))
    enc = model.encoder
    x = torch.randn(2, 3, 96, 96)
    plain = enc.embed(x)
    region = torch.tensor([[2, 3, 4], [0, 0, 0]])
    angle = torch.tensor([40.0, 10.0])
    emb = enc.embed(x, region, angle)
    changed = (emb - plain).abs().amax(-1).view(2, 12, 12) > 0
    expect = torch.zeros(2, 12, 12, dtype=torch.bool)
    expect[0, 2:6, 3:7] = True
    assert torch.equal(changed, expect)
    assert enc.angle_embed.bin(torch.tensor([-45.0, -0.1, 0.0, 44.9, 45.0])).tolist() == [0, 3, 4, 7, 7]
    shared = _micro(ares=AresConfig(angle_embed="shared")).encoder.angle_embed
    assert shared.weight.shape[0] == 1


def test_state_dict_round_trip(tmp_path):
    model = _micro(msp=MspConfig(scales=(6,)), ares=AresConfig())
    path = tmp_path / "m.pt"
    torch.save(model.state_dict(), path)
    other = create_model("roma_micro_tiny", msp=MspConfig(scales=(6,)), ares=AresConfig()).eval()
    other.load_state_dict(torch.load(path, weights_only=True))
    x = torch.randn(1, 3, 96, 96)
    assert torch.equal(model(x)["loss"], other(x)["loss"])


def test_bad_geometry_errors():
    with pytest.raises(ValueError, match="not divisible by cluster size"):
        create_model("roma_micro_tiny", img_size=80)  # 10x10 grid, clusters of 4
    with pytest.raises(KeyError, match="did you mean 'roma_base'"):
        create_model("roma_bse")
    with pytest.raises(ValueError, match="expected images of 96x96"):
        _micro()(torch.randn(1, 3, 64, 64))


def test_v3_with_extra_directions_off_equals_uni():
    from roma.models.encoder import RoMAEncoder
    from roma.models.mamba import expand_to_v3

    torch.manual_seed(0)
    uni = RoMAEncoder(32, 2, img_size=32, patch_size=8, cluster_size=2)
    v3 = RoMAEncoder(32, 2, img_size=32, patch_size=8, cluster_size=2, directions=4)
    v3.load_state_dict(expand_to_v3(uni.state_dict()))
    x = torch.randn(2, 3, 32, 32)
    for layer in v3.layers:
        layer.mixer.active = [""]
    torch.testing.assert_close(v3.forward_tokens(x), uni.forward_tokens(x))
    for layer in v3.layers:
        layer.mixer.active = list(layer.mixer.suffixes)
    assert not torch.allclose(v3.forward_tokens(x), uni.forward_tokens(x))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_bf16_autocast_on_cuda_matches_fp32_cpu():
    model = _micro(msp=MspConfig(scales=(2,)), ares=AresConfig())
    x = torch.randn(4, 3, 96, 96)
    region, angle = torch.tensor([[1, 1, 4]] * 4), torch.full((4,), 12.0)
    ref = model(x, region=region, angle=angle)["loss"].item()
    model = model.cuda().train()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = model(x.cuda(), region=region.cuda(), angle=angle.cuda())
    out["loss"].backward()
    assert abs(out["loss"].item() - ref) / ref < 0.05
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_run_id_ignores_int_vs_float_spelling():
    from roma.config import RunConfig, TrainConfig

    one, one_f = RunConfig(train=TrainConfig(warmup_epochs=1)), RunConfig(train=TrainConfig(warmup_epochs=1.0))
    assert one.run_id == one_f.run_id
    assert one.run_id != RunConfig(train=TrainConfig(warmup_epochs=1.5)).run_id


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_cpu_attention_matches_sdpa(dtype):
    """The decoder's low-precision CPU attention (two matmuls) computes what SDPA computes, outputs
    and gradients (checked in fp64, where both run at full precision, and under bf16 autocast)."""
    from roma.models.decoder import CrossAttention

    torch.manual_seed(0)
    attn = CrossAttention(32, 4).to(torch.float64 if dtype == torch.float64 else torch.float32)
    q, kv = torch.randn(3, 10, 32, requires_grad=True), torch.randn(3, 7, 32, requires_grad=True)
    if dtype == torch.float64:
        q, kv = q.detach().double().requires_grad_(), kv.detach().double().requires_grad_()
    mask = torch.rand(10, 7) > 0.4
    mask[:, 0] = True  # every query sees at least one key, as in the decoder
    amp = dict(device_type="cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16)
    with torch.autocast(**amp):
        out = attn(q, kv, mask)
    out.float().sum().backward()
    grads = [q.grad.clone(), kv.grad.clone()] + [p.grad.clone() for p in attn.parameters()]
    q.grad = kv.grad = None
    attn.zero_grad()

    def sdpa(self, q, kv, mask):
        B, Q, C = q.shape
        h = self.heads
        qh = self.q(q).view(B, Q, h, C // h).transpose(1, 2)
        k, v = self.kv(kv).view(B, -1, 2, h, C // h).permute(2, 0, 3, 1, 4)
        o = torch.nn.functional.scaled_dot_product_attention(qh, k, v, attn_mask=mask)
        return self.proj(o.transpose(1, 2).reshape(B, Q, C))

    with torch.autocast(**amp):
        ref = sdpa(attn, q, kv, mask)
    ref.float().sum().backward()
    tol = dict(rtol=1e-9, atol=1e-9) if dtype == torch.float64 else dict(rtol=0.05, atol=0.02)
    torch.testing.assert_close(out.float(), ref.float(), **tol)
    for g, r in zip(grads, [q.grad, kv.grad] + [p.grad for p in attn.parameters()]):
        torch.testing.assert_close(g, r, **tol)


def test_bf16_autocast_on_cpu_tracks_fp32_training():
    """train.precision=bf16 on a CPU (fast where the CPU has AMX): 12 AdamW steps on one batch follow
    the fp32 loss curve within 2% at every step, and the loss still falls."""
    from roma.train.pretrain import autocast_dtype

    x = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    region, angle = torch.tensor([[1, 1, 4]] * 4), torch.full((4,), 12.0)
    curves = {}
    for precision in ("fp32", "bf16"):
        model = _micro(img_size=64, msp=MspConfig(scales=(2,)), ares=AresConfig()).train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        amp = autocast_dtype(precision, torch.device("cpu"))
        curves[precision] = []
        for _ in range(12):
            with torch.autocast("cpu", dtype=amp or torch.float32, enabled=amp is not None):
                loss = model(x, region=region, angle=angle)["loss"]
            loss.backward()
            opt.step()
            opt.zero_grad()
            curves[precision].append(loss.item())
    for a, b in zip(curves["bf16"], curves["fp32"]):
        assert abs(a - b) / b < 0.02, (curves["bf16"], curves["fp32"])
    assert curves["bf16"][-1] < curves["bf16"][0] * 0.98
