"""Every config key reaches the object it names: per section, a spec with every key changed from
its default builds a run whose objects carry the changed values."""
from __future__ import annotations

import dataclasses

import pytest
import yaml

from roma.config import ModelConfig, MspConfig, ResourcesConfig
from roma.spec import load_spec


def _run(tmp_path, body: dict):
    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump({"base": "defaults", **body}))
    return load_spec(spec, check_data=False).runs[0]


def test_model_and_msp_keys_reach_the_model(tmp_path):
    from roma.train.pretrain import build_model

    model = {"name": "roma_micro_small", "img_size": 64, "patch_size": 4, "cluster_size": 2,
             "decoder_dim": 96, "decoder_depth": 3, "decoder_heads": 3}
    msp = {"enabled": True, "scales": [2, 4], "weight": 0.3, "hidden_dim": 40}
    assert set(model) == {f.name for f in dataclasses.fields(ModelConfig)}  # every key is changed here
    assert set(msp) == {f.name for f in dataclasses.fields(MspConfig)}
    cfg = _run(tmp_path, {"model": model, "msp": msp, "ares": {"region_sizes": [4, 2]}})
    assert all(getattr(cfg.model, k) != getattr(ModelConfig(), k) for k in model)
    m = build_model(cfg)
    enc, dec = m.encoder, m.decoder
    assert (enc.embed_dim, enc.img_size, enc.patch_size, enc.cluster_size) == (128, 64, 4, 2)  # micro_small: 128 wide
    assert (dec.dim, dec.depth, len(dec.blocks)) == (96, 3, 3) and len(enc.taps) == 3  # one tap per decoder layer
    assert all(b.attn.heads == 3 for b in dec.blocks)
    assert dec.msp_scales == (2, 4) and m.msp_weight == 0.3
    assert all(h.out[0].out_features == 40 for h in dec.block_heads.values())


def test_ares_keys_reach_the_angle_embedding_and_the_transform(tmp_path):
    from roma.train.pretrain import build_model

    ares = {"enabled": True, "descriptor": "hog", "region_sizes": [4, 2], "max_angle": 30.0, "angles": [],
            "p": 0.5, "target": "original", "angle_embed": "binned", "angle_bins": 6}
    cfg = _run(tmp_path, {"model": "roma_micro_tiny", "ares": ares})
    emb = build_model(cfg).encoder.angle_embed
    assert (emb.mode, emb.max_angle, emb.weight.shape[0]) == ("binned", 30.0, 6)


def test_data_keys_reach_the_dataset(tmp_path):
    from roma.config import DataConfig
    from roma.data import build_pretrain_dataset
    from roma.data.subsets import manifest_name
    from test_train_helpers import write_pngs

    from roma.data.fingerprint import data_fingerprint

    from roma.data.heldout import build_heldout_dataset, with_heldout_checksum

    root = write_pngs(tmp_path / "imgs", n=12)
    held = write_pngs(tmp_path / "held", n=6, seed=1)
    for f in sorted(held.iterdir()):
        f.rename(held / f"h_{f.name}")
    heldout_checksum = with_heldout_checksum(DataConfig(root=str(root), heldout_root=str(held), heldout_size=4))[0]
    data = {"root": str(root), "subset": 5, "subset_seed": 3, "max_bad_fraction": 0.2, "num_workers": 0,
            "crop_scale": [0.5, 0.9], "hflip": False, "checksum": data_fingerprint(root, 5, 3).checksum,
            "heldout_root": str(held), "heldout_size": 4, "heldout_checksum": heldout_checksum.heldout_checksum}
    # nominal_total reaches no dataset: it sizes a spec's subset null without data (test_heldout.py)
    assert set(data) | {"nominal_total"} == {f.name for f in dataclasses.fields(DataConfig)}
    cfg = _run(tmp_path, {"model": "roma_micro_tiny", "data": data, "ares": {"descriptor": "wavelet", "p": 0.25}})
    ds, info = build_pretrain_dataset(cfg.data, cfg.model, cfg.ares, tmp_path / "run", cfg.train.seed)
    assert len(ds) == info["data_size"] == 5 and info["manifest"].endswith(manifest_name(5, 3))
    assert info["checksum"] == data["checksum"]  # the pinned checksum is checked against the data
    with pytest.raises(ValueError, match="changed since this run was launched"):
        build_pretrain_dataset(dataclasses.replace(cfg.data, checksum="f" * 64), cfg.model, cfg.ares,
                               tmp_path / "run2", cfg.train.seed)
    held_ds, held_info = build_heldout_dataset(cfg.data, cfg.model)
    assert len(held_ds) == 4 and held_info["heldout_checksum"] == data["heldout_checksum"]
    assert all(str(held) in held_ds.path(i) for i in range(4))
    with pytest.raises(ValueError, match="held-out data .* changed since this run was launched"):
        build_heldout_dataset(dataclasses.replace(cfg.data, heldout_checksum="f" * 64), cfg.model)
    assert (held_ds.transform.crop_scale, held_ds.transform.hflip) == ((0.5, 0.9), False)
    t = ds.transform
    assert (t.crop_scale, t.hflip, t.img_size, t.patch_size) == ((0.5, 0.9), False, 96, 8)
    assert t.ares_cfg == cfg.ares and (t.ares_cfg.descriptor, t.ares_cfg.p) == ("wavelet", 0.25)


def test_resources_keys_reach_the_slurm_parameters(tmp_path):
    from roma.launch.slurm import slurm_parameters

    res = {"nodes": 2, "gpus_per_node": 4, "cpus_per_task": 6, "mem_gb": 100, "time_min": 90, "partition": "p",
           "account": "a", "qos": "q", "constraint": "c", "signal_delay_s": 300, "setup": ["module load x"]}
    assert set(res) == {f.name for f in dataclasses.fields(ResourcesConfig)}
    cfg = _run(tmp_path, {"resources": res})
    p = slurm_parameters(cfg.resources, "job")
    assert (p["nodes"], p["gpus_per_node"], p["ntasks_per_node"], p["cpus_per_task"], p["mem"], p["time"]) == \
        (2, 4, 4, 6, "100GB", 90)
    assert (p["partition"], p["account"], p["qos"], p["constraint"], p["signal_delay_s"], p["setup"]) == \
        ("p", "a", "q", "c", 300, ["module load x"])


@pytest.mark.parametrize("key", ["decoder_dim", "decoder_depth", "decoder_heads"])
def test_decoder_keys_change_the_run_and_its_model(tmp_path, key):
    from roma.train.pretrain import build_model

    base = _run(tmp_path, {"model": "roma_micro_tiny"})
    changed = _run(tmp_path, {"model": {"name": "roma_micro_tiny", key: {"decoder_dim": 64, "decoder_depth": 2,
                                                                         "decoder_heads": 2}[key]}})
    assert base.run_id != changed.run_id
    a, b = build_model(base).decoder, build_model(changed).decoder
    got = {"decoder_dim": b.dim, "decoder_depth": b.depth, "decoder_heads": b.blocks[0].attn.heads}
    before = {"decoder_dim": a.dim, "decoder_depth": a.depth, "decoder_heads": a.blocks[0].attn.heads}
    assert got[key] == getattr(changed.model, key) != before[key]
