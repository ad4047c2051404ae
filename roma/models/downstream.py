"""A pretrained RoMA encoder prepared for downstream tasks (probe, change detection, segmentation).

    enc = build_downstream_encoder(Path("run/encoder.pt"), "roma_base", img_size=224, scan="v3")
    enc.forward_tokens(x)   # (B, N, d) raster order, N = (img_size / patch)^2
    enc.forward_grid(x)     # (B, d, gh, gw)
    enc.forward_pooled(x)   # (B, d): mean of the tokens, or the middle cls token

What changes from pretraining, as in RoMA's downstream code (roma-reference.md, section 1.5):
- the fixed sin-cos position table is bicubic-resized from the pretraining grid to the new one;
- scan "v3" adds three directions (row-major backward, column-major forward/backward), each with
  its own conv1d / x_proj / dt_proj / A / D copied from the pretrained single direction;
- readout "cls" inserts a cls token in the middle of the sequence (index N // 2, zero position).
  It was never trained in pretraining, so it is a random, frozen vector unless fine-tuned;
  "mean" (the default) averages the normalised tokens instead.
Tokens always go through the pretrained last tap LayerNorm (the role of RoMA's norm_f).

model_name "vit_base_patch16" gives the ViT-B/16 baseline (the MAE row of the paper's tables) with
the same API: a timm/MAE checkpoint ({"model": sd}, {"state_dict": sd} or sd; MAE's decoder and
mask token dropped), its pos-embed bicubic-resized around the cls token; readout "cls" is ViT's
own cls token, "mean" the mean of the patch tokens.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from roma import torchfile
from roma.models.encoder import RoMAEncoder, column_major_perm
from roma.models.mamba import expand_to_v3
from roma.models.registry import get_model_size

SCANS = {"uni": 1, "v3": 4}
READOUTS = ("mean", "cls")
CKPT_KEYS = ("model_config", "model_name", "state_dict")
# Pretraining-only parameters that no downstream task reads: dropped before the strict key check.
PRETRAIN_ONLY_PREFIXES = ("angle_embed.",)
VIT_MODELS = {  # timm's vit_base_patch16_224 / vit_tiny_patch16_224 shapes
    "vit_base_patch16": dict(patch_size=16, embed_dim=768, depth=12, heads=12),
    "vit_tiny_patch16": dict(patch_size=16, embed_dim=192, depth=12, heads=3),
}
VIT_DROP_PREFIXES = ("decoder_", "mask_token", "head.", "fc_norm.")  # MAE decoder, classifier heads


# ----------------------------------------------------------------------------- checkpoint helpers
def load_encoder_checkpoint(path: Path) -> dict:
    """Read and validate an encoder.pt: {"model_config", "model_name", "state_dict"}."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"encoder checkpoint {path} does not exist")
    ckpt = torchfile.load(path, "export it again: rerun the run's pretraining (launch.py SPEC --only RUN --force)")
    if not isinstance(ckpt, dict) or any(k not in ckpt for k in CKPT_KEYS):
        have = sorted(ckpt) if isinstance(ckpt, dict) else type(ckpt).__name__
        raise ValueError(f"{path} is not an encoder checkpoint: needs keys {list(CKPT_KEYS)}, has {have}")
    return ckpt


def file_sha256(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def resize_pos_embed(pos: torch.Tensor, old_grid: tuple[int, int], new_grid: tuple[int, int]) -> torch.Tensor:
    """(1, gh*gw, d) raster table -> (1, gh'*gw', d) by bicubic interpolation (as RoMA / MAE)."""
    if pos.dim() != 3 or pos.shape[1] != old_grid[0] * old_grid[1]:
        raise ValueError(f"pos_embed of shape {tuple(pos.shape)} does not match the grid {old_grid}")
    if tuple(old_grid) == tuple(new_grid):
        return pos.clone()
    d = pos.shape[-1]
    grid = pos.reshape(1, *old_grid, d).permute(0, 3, 1, 2).float()  # (1, d, gh, gw)
    grid = F.interpolate(grid, size=tuple(new_grid), mode="bicubic", align_corners=False)
    return grid.permute(0, 2, 3, 1).reshape(1, new_grid[0] * new_grid[1], d).to(pos.dtype)


# ----------------------------------------------------------------------------- the module
class DownstreamEncoder(nn.Module):
    def __init__(self, encoder: RoMAEncoder, readout: str = "mean"):
        super().__init__()
        if readout not in READOUTS:
            raise ValueError(f"readout must be one of {READOUTS}, got {readout!r}")
        self.encoder, self.readout = encoder, readout
        self.embed_dim, self.grid, self.patch_size = encoder.embed_dim, encoder.grid, encoder.patch_size
        self.img_size = encoder.img_size
        n = self.grid[0] * self.grid[1]
        self.cls_index = n // 2 if readout == "cls" else None
        if readout == "cls":
            self.cls_token = nn.Parameter(torch.zeros(1, 1, self.embed_dim))
            nn.init.trunc_normal_(self.cls_token, std=0.02)
        self.register_buffer("col_perm", column_major_perm(*self.grid, self.cls_index), persistent=False)

    @property
    def directions(self) -> int:
        return len(self.encoder.layers[0].mixer.suffixes)

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, N (+1 cls), d), normalised, raster order (cls at cls_index)."""
        h = self.encoder.embed(x)
        if self.cls_index is not None:  # the cls position embedding is zero (RoMA's downstream code)
            i = self.cls_index
            h = torch.cat([h[:, :i], self.cls_token.expand(h.shape[0], -1, -1).to(h.dtype), h[:, i:]], 1)
        for layer in self.encoder.layers:
            h = layer(h, self.col_perm)
        return self.encoder.tap_norms[-1](h)

    def forward_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, gh*gw, d) patch tokens in raster order (the cls token removed)."""
        h = self._features(x)
        if self.cls_index is not None:
            h = torch.cat([h[:, : self.cls_index], h[:, self.cls_index + 1:]], 1)
        return h

    def forward_grid(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, d, gh, gw): a feature map for dense heads."""
        t = self.forward_tokens(x)
        return t.transpose(1, 2).reshape(t.shape[0], self.embed_dim, *self.grid)

    def forward_pooled(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, d): the cls token, or the mean of the patch tokens."""
        h = self._features(x)
        if self.cls_index is not None:
            return h[:, self.cls_index]
        return h.mean(1)

    forward = forward_pooled

    def freeze(self) -> "DownstreamEncoder":
        """No gradients and eval mode: the linear-probe setting."""
        for p in self.parameters():
            p.requires_grad_(False)
        return self.eval()


class ViTDownstream(nn.Module):
    """The ViT-B baseline behind the DownstreamEncoder API."""

    def __init__(self, vit, img_size: int, readout: str = "mean"):
        super().__init__()
        if readout not in READOUTS:
            raise ValueError(f"readout must be one of {READOUTS}, got {readout!r}")
        self.vit, self.readout, self.img_size = vit, readout, img_size
        self.embed_dim, self.patch_size = vit.embed_dim, vit.patch_size
        self.grid = (img_size // vit.patch_size, img_size // vit.patch_size)
        self.directions = 1

    def forward_tokens(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W) -> (B, N, d)
        return self.vit.forward_features(x)[:, 1:]

    def forward_grid(self, x: torch.Tensor) -> torch.Tensor:  # -> (B, d, gh, gw)
        t = self.forward_tokens(x)
        return t.transpose(1, 2).reshape(t.shape[0], self.embed_dim, *self.grid)

    def forward_pooled(self, x: torch.Tensor) -> torch.Tensor:  # -> (B, d)
        h = self.vit.forward_features(x)
        return h[:, 0] if self.readout == "cls" else h[:, 1:].mean(1)

    forward = forward_pooled
    freeze = DownstreamEncoder.freeze


def build_vit_encoder(ckpt: Path | None, img_size: int, readout: str = "mean", seed: int = 0,
                      model_name: str = "vit_base_patch16") -> ViTDownstream:
    from roma.models.vit import VisionTransformer

    spec = VIT_MODELS[model_name]
    p = spec["patch_size"]
    if img_size % p:
        raise ValueError(f"img_size {img_size} is not a multiple of the patch size {p}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vit = VisionTransformer(img_size, p, spec["embed_dim"], spec["depth"], spec["heads"])
    if ckpt is not None:
        if not Path(ckpt).is_file():
            raise FileNotFoundError(f"ViT checkpoint {ckpt} does not exist")
        raw = torchfile.load(ckpt, "give a readable ViT checkpoint")
        state = raw.get("model", raw.get("state_dict", raw)) if isinstance(raw, dict) else None
        if not isinstance(state, dict):
            raise ValueError(f"{ckpt} holds no state dict (expected {{'model': ...}}, {{'state_dict': ...}} or one)")
        state = {k: v for k, v in state.items() if not k.startswith(VIT_DROP_PREFIXES)}
        if "pos_embed" not in state:
            raise KeyError(f"{ckpt} has no 'pos_embed'")
        pos = state["pos_embed"]  # (1, 1 + g*g, d): cls position first, kept as is
        g = int(round((pos.shape[1] - 1) ** 0.5))
        grid = (img_size // p, img_size // p)
        state["pos_embed"] = torch.cat([pos[:, :1], resize_pos_embed(pos[:, 1:], (g, g), grid)], 1)
        _check_state(state, vit, str(ckpt))
        vit.load_state_dict(state, strict=True)
    return ViTDownstream(vit, img_size, readout)


# ----------------------------------------------------------------------------- building
def _check_state(state: dict, model: nn.Module, source: str) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise KeyError(f"{source} does not fit the {type(model).__name__}: "
                       f"missing keys {missing or 'none'}; unexpected keys {unexpected or 'none'}")
    wrong = [f"{k}: {tuple(v.shape)} vs {tuple(expected[k].shape)}" for k, v in state.items()
             if tuple(v.shape) != tuple(expected[k].shape)]
    if wrong:
        raise ValueError(f"{source} has parameters of the wrong shape (checkpoint vs model): {wrong}")


def build_downstream_encoder(ckpt: Path | None, model_name: str, img_size: int, patch_size: int | None = None,
                             scan: str = "uni", readout: str = "mean", seed: int = 0
                             ) -> DownstreamEncoder | ViTDownstream:
    """A pretrained (or, with ckpt None, randomly initialised) encoder at img_size.

    patch_size: None takes the checkpoint's (or, for random init, the registry's); with a checkpoint
    a different value is an error: the patch-embedding convolution is tied to its patch size.
    seed: the random initialisation of the ckpt-None baseline and of the cls token.
    """
    if scan not in SCANS:
        raise ValueError(f"scan must be one of {list(SCANS)}, got {scan!r}")
    if model_name in VIT_MODELS:
        if scan != "uni" or (patch_size not in (None, VIT_MODELS[model_name]["patch_size"])):
            raise ValueError(f"{model_name} has patch size {VIT_MODELS[model_name]['patch_size']} and no "
                             f"scan directions (got patch_size={patch_size}, scan={scan!r})")
        return build_vit_encoder(ckpt, img_size, readout, seed, model_name)
    if readout not in READOUTS:
        raise ValueError(f"readout must be one of {READOUTS}, got {readout!r}")
    size = get_model_size(model_name)
    if ckpt is not None:
        data = load_encoder_checkpoint(ckpt)
        if data["model_name"] != model_name:
            raise ValueError(f"{ckpt} holds model {data['model_name']!r}, not {model_name!r}")
        cfg = data["model_config"]
        src_img, src_patch = int(cfg.get("img_size", size.img_size)), int(cfg.get("patch_size", size.patch_size))
        n_taps = int(cfg.get("decoder_depth", size.decoder_depth))  # one tap per decoder layer
        state, source = dict(data["state_dict"]), str(ckpt)
    else:
        # built directly at the target grid: an exact sin-cos table, nothing to resize
        src_img, src_patch, n_taps = img_size, patch_size or size.patch_size, size.decoder_depth
        if src_img % src_patch:
            raise ValueError(f"img_size {img_size} is not a multiple of the patch size {src_patch}")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            state = RoMAEncoder(size.embed_dim, size.depth, src_img, src_patch, size.cluster_size,
                                n_taps=n_taps).state_dict()
        source = f"random init (seed {seed})"
    if patch_size is not None and patch_size != src_patch:
        raise ValueError(f"patch_size {patch_size} differs from the pretrained patch size {src_patch}")
    if img_size % src_patch:
        raise ValueError(f"img_size {img_size} is not a multiple of the patch size {src_patch}")

    state = {k: v for k, v in state.items() if not k.startswith(PRETRAIN_ONLY_PREFIXES)}
    has_v3 = any(".mixer.conv1d_b." in k for k in state)
    if scan == "v3" and not has_v3:
        state = expand_to_v3(state)  # every direction starts as the pretrained one
    if "pos_embed" not in state:
        raise KeyError(f"{source} has no 'pos_embed'")
    old_grid = (src_img // src_patch, src_img // src_patch)
    new_grid = (img_size // src_patch, img_size // src_patch)
    state["pos_embed"] = resize_pos_embed(state["pos_embed"], old_grid, new_grid)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        encoder = RoMAEncoder(size.embed_dim, size.depth, img_size, src_patch, size.cluster_size,
                              directions=SCANS[scan], n_taps=n_taps)
        model = DownstreamEncoder(encoder, readout)
    _check_state(state, encoder, source)
    encoder.load_state_dict(state, strict=True)
    return model
