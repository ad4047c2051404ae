"""Named model sizes, `create_model`, and the `roma-models` listing (parameters, FLOPs).

    python -m roma.models.registry [--img-size 192] [--names roma_base ...]
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass

import torch

from roma.config import AresConfig, MspConfig


@dataclass(frozen=True)
class ModelSize:
    embed_dim: int
    depth: int
    img_size: int = 192
    patch_size: int = 16
    cluster_size: int = 4
    decoder_dim: int = 512
    decoder_depth: int = 4
    decoder_heads: int = 8


# The paper's sizes (released pretraining code) and micro variants that train on a laptop CPU:
# same 12x12 patch grid (96 px, patch 8) and 3x3 clusters as the paper's 192 px / patch 16.
MODELS: dict[str, ModelSize] = {
    "roma_tiny": ModelSize(192, 12),
    "roma_small": ModelSize(384, 12),
    "roma_base": ModelSize(768, 12),
    "roma_large": ModelSize(1024, 24),
    "roma_micro_tiny": ModelSize(64, 6, img_size=96, patch_size=8, decoder_dim=128, decoder_heads=4),
    "roma_micro_small": ModelSize(128, 6, img_size=96, patch_size=8, decoder_dim=128, decoder_heads=4),
    "roma_micro_base": ModelSize(192, 8, img_size=96, patch_size=8, decoder_dim=128, decoder_heads=4),
}

# Encoder parameter counts of the released pretraining code (roma-reference.md, section 1.3).
RELEASED_ENCODER_PARAMS = {"roma_tiny": 5.22e6, "roma_small": 20.28e6, "roma_base": 79.93e6, "roma_large": 282.31e6}


def list_models() -> list[str]:
    return list(MODELS)


def get_model_size(name: str) -> ModelSize:
    if name not in MODELS:
        import difflib

        close = difflib.get_close_matches(name, MODELS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise KeyError(f"unknown model {name!r}{hint}; registered: {', '.join(MODELS)}")
    return MODELS[name]


def create_model(name: str, ares: AresConfig | None = None, msp: MspConfig | None = None, **overrides):
    """A RoMAPretrain of a registered size; overrides: img_size, patch_size, cluster_size, decoder_*."""
    from roma.models.pretrain import RoMAPretrain

    size = get_model_size(name)
    kwargs = {**size.__dict__, **{k: v for k, v in overrides.items() if v is not None}}
    unknown = set(kwargs) - set(size.__dict__)
    if unknown:
        raise TypeError(f"create_model got unknown options {sorted(unknown)}")
    return RoMAPretrain(ares=ares, msp=msp, **kwargs)


def count_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def encoder_flops(model, img_size: int | None = None) -> float:
    """Forward FLOPs of the encoder on one image: matmuls/convs counted by torch's FlopCounterMode
    plus the selective scan's elementwise work (about 9 FLOPs per (token, channel, state))."""
    from torch.utils.flop_counter import FlopCounterMode

    enc = model.encoder
    size = img_size or enc.img_size
    if size != enc.img_size:
        raise ValueError("encoder_flops is measured at the model's own img_size; build the model at that size")
    x = torch.zeros(1, 3, size, size)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        enc.forward_taps(x)
    tokens = enc.grid[0] * enc.grid[1]
    d_inner, d_state = enc.embed_dim, enc.layers[0].mixer.d_state
    return counter.get_total_flops() + 9.0 * tokens * d_inner * d_state * enc.depth


def pretrain_flops(model) -> float:
    """Forward FLOPs of the pretraining model on one image (encoder over the clusters it encodes,
    decoder, MSP heads, loss): torch's FlopCounterMode plus the scan's elementwise work, as in
    `encoder_flops`. Training costs about 3x this; experiments/throughput.csv scales images/s
    between model sizes by its ratio."""
    from torch.utils.flop_counter import FlopCounterMode

    enc = model.encoder
    x = torch.zeros(1, 3, enc.img_size, enc.img_size)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    tokens = (model.n_clusters - 1) * model.cluster_size**2  # the last cluster is predicted, never encoded
    d_inner, d_state = enc.embed_dim, enc.layers[0].mixer.d_state
    return counter.get_total_flops() + 9.0 * tokens * d_inner * d_state * enc.depth


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="List registered RoMA models with parameter counts and FLOPs.")
    parser.add_argument("--img-size", type=int, default=None, help="resolution for FLOPs (default: each model's own)")
    parser.add_argument("--names", nargs="*", default=None, help="models to list (default: all)")
    args = parser.parse_args(argv)
    print(f"{'model':<18}{'dim':>6}{'depth':>6}{'img':>6}{'patch':>6}{'encoder M':>11}{'total M':>9}{'GFLOPs':>9}")
    for name in args.names or list_models():
        size = get_model_size(name)
        model = create_model(name, img_size=args.img_size)
        img = args.img_size or size.img_size
        print(f"{name:<18}{size.embed_dim:>6}{size.depth:>6}{img:>6}{size.patch_size:>6}"
              f"{count_params(model.encoder) / 1e6:>11.2f}{count_params(model) / 1e6:>9.2f}"
              f"{encoder_flops(model) / 1e9:>9.2f}")


if __name__ == "__main__":
    main()
