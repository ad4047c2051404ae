"""Change-detection and segmentation models, sliding-window inference, layer-wise lr decay."""
import pytest
import torch
import torch.nn as nn

from roma.eval.dense.change_detection import SiameseChangeDetector
from roma.eval.dense.segmentation import Segmenter
from roma.eval.dense.sliding import sliding_window, window_starts
from roma.eval.dense.train import param_groups
from roma.train.optim import lr_at
from roma.models.downstream import build_downstream_encoder


pytestmark = pytest.mark.usefixtures("one_thread")


def micro_encoder(img_size=32):
    return build_downstream_encoder(None, "roma_micro_tiny", img_size=img_size, scan="uni")  # patch 8, d 64


def toy_pairs(n, size=32, gen=None):
    """Noise images; 'after' has one random 8x8 block brightened: label 1 there."""
    a = torch.randn(n, 3, size, size, generator=gen)
    b, y = a.clone(), torch.zeros(n, size, size, dtype=torch.long)
    for i in range(n):
        t, l = (int(v) for v in torch.randint(0, size - 8, (2,), generator=gen))
        b[i, :, t:t + 8, l:l + 8] += 3.0
        y[i, t:t + 8, l:l + 8] = 1
    return a, b, y


def test_siamese_identical_inputs_give_no_change_after_training():
    model = SiameseChangeDetector(micro_encoder(), decoder_channels=(32, 16, 16, 8))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(60):
        a, b, y = toy_pairs(4, gen=g)
        loss = model.loss(a, b, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        a = torch.randn(3, 3, 32, 32)
        same = model(a, a)
        a, b, y = toy_pairs(8, gen=g)
        pred = model(a, b).argmax(1)
    assert same.shape == (3, 2, 32, 32)
    assert (same.argmax(1) == 0).all()
    # and the model did learn the task, so the all-zero map is not a constant output
    assert (pred == y).float().mean() > 0.9
    assert (pred[y == 1] == 1).float().mean() > 0.5


def test_siamese_accepts_crops_of_another_size():
    model = SiameseChangeDetector(micro_encoder(), decoder_channels=(16, 8, 8, 8)).eval()
    with torch.no_grad():  # 48 px crops are resized to the encoder's 32 px and the logits back
        assert model(torch.randn(1, 3, 48, 48), torch.randn(1, 3, 48, 48)).shape == (1, 2, 48, 48)
    with pytest.raises(ValueError, match="differ in shape"):
        model(torch.randn(1, 3, 32, 32), torch.randn(1, 3, 16, 16))


def test_segmenter_shapes_and_aux_loss():
    model = Segmenter(micro_encoder(), channels=16, aux_channels=8)
    x, y = torch.randn(2, 3, 32, 32), torch.randint(0, 2, (2, 32, 32))
    main, aux = model.forward_both(x)
    assert main.shape == aux.shape == (2, 2, 32, 32)
    ce = nn.functional.cross_entropy
    model.eval()  # dropout off so the two passes agree
    main, aux = model.forward_both(x)
    assert torch.allclose(model.loss(x, y), ce(main, y) + 0.4 * ce(aux, y), atol=1e-5)
    assert torch.allclose(model(x), main, atol=1e-5)


def test_window_starts_cover_the_image():
    assert window_starts(100, 40, 30) == [0, 30, 60]
    assert window_starts(100, 40, 40) == [0, 40, 60]
    assert window_starts(30, 40, 20) == [0]


@pytest.mark.parametrize("h,w", [(50, 70), (20, 33)])
def test_sliding_window_equals_whole_image_for_pointwise_model(h, w):
    toy = nn.Conv2d(6, 3, 1)  # translation-equivariant with no spatial context
    a, b = torch.randn(2, 3, h, w), torch.randn(2, 3, h, w)
    fn = lambda x, y: toy(torch.cat([x, y], 1))  # noqa: E731
    with torch.no_grad():
        whole = fn(a, b)
        for window_batch in (1, 3, 100):
            slid = sliding_window(fn, (a, b), window=24, stride=16, num_classes=3, window_batch=window_batch)
            assert slid.shape == whole.shape
            assert torch.allclose(slid, whole, atol=1e-6)


def test_layer_decay_groups():
    model = Segmenter(micro_encoder(), channels=8, aux_channels=8)
    groups = param_groups(model, lr=1.0, weight_decay=0.05, layer_decay=0.5)
    by_name = {n: g for g in groups for n in g["names"]}
    depth = 6
    assert by_name["encoder.encoder.patch_embed.weight"]["lr"] == pytest.approx(0.5 ** (depth + 1))
    assert by_name["encoder.encoder.layers.0.mixer.in_proj.weight"]["lr"] == pytest.approx(0.5 ** depth)
    assert by_name["encoder.encoder.layers.5.mixer.in_proj.weight"]["lr"] == pytest.approx(0.5)
    assert by_name["head.cls.weight"]["lr"] == pytest.approx(1.0)
    for name in ("encoder.encoder.layers.2.mixer.A_log", "encoder.encoder.layers.2.mixer.D",
                 "encoder.encoder.layers.2.norm1.weight", "head.cls.bias"):
        assert by_name[name]["weight_decay"] == 0.0, name
    assert by_name["encoder.encoder.layers.2.mixer.x_proj.weight"]["weight_decay"] == 0.05
    n_params = sum(1 for p in model.parameters() if p.requires_grad)
    assert sum(len(g["params"]) for g in groups) == n_params


def test_lr_schedule_warmup_then_cosine():
    # the dense loop's factor: lr_at(step, 1.0, warmup, total, min_lr / lr) (roma.eval.dense.train)
    assert lr_at(0, 1.0, 10, 100, 0.0) == pytest.approx(0.1)
    assert lr_at(9, 1.0, 10, 100, 0.0) == pytest.approx(1.0)
    assert lr_at(55, 1.0, 10, 100, 0.0) == pytest.approx(0.5)
    assert lr_at(100, 1.0, 10, 100, 0.1) == pytest.approx(0.1)
