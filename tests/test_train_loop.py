"""One training step: gradient accumulation, non-finite loss, precision, progress lines."""
from __future__ import annotations

import pytest
import torch

from roma.config import AresConfig, MspConfig
from roma.models import create_model
from roma.train.pretrain import NonFiniteLossError, autocast_dtype, forward_backward

CPU = torch.device("cpu")


def _model():
    torch.manual_seed(0)
    return create_model("roma_micro_tiny", img_size=32, patch_size=8, cluster_size=2,
                        ares=AresConfig(enabled=False), msp=MspConfig(scales=(2,)))


def _grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_accumulation_equals_one_big_batch():
    x = torch.randn(8, 3, 32, 32)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    big = _model()
    lb = forward_backward(big, [{"image": x}], CPU, None, scaler, step=1)
    acc = _model()
    la = forward_backward(acc, [{"image": x[:4]}, {"image": x[4:]}], CPU, None, scaler, step=1)
    assert torch.allclose(la["loss"], lb["loss"], atol=1e-6)
    gb, ga = _grads(big), _grads(acc)
    assert gb.keys() == ga.keys() and len(gb) > 10
    for n in gb:
        assert torch.allclose(ga[n], gb[n], atol=1e-6, rtol=1e-4), n


class _NanAt(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(()))

    def forward(self, images, **_):
        return {"loss": self.w * images.mean() * float("nan")}


def test_non_finite_loss_names_the_step():
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss \(nan\) at step 37"):
        forward_backward(_NanAt(), [{"image": torch.ones(2, 3, 4, 4)}], CPU, None, scaler, step=37)


def test_precision_choice():
    assert autocast_dtype("auto", CPU) is None
    assert autocast_dtype("auto", torch.device("cuda")) is torch.bfloat16
    assert autocast_dtype("fp32", torch.device("cuda")) is None
    with pytest.raises(ValueError, match="train.precision"):
        autocast_dtype("fp8", CPU)
