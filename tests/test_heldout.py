"""The held-out pretraining loss (val_loss): which images, refusals, the loop's reports, resume, compute."""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
import torch

from roma.config import DataConfig, RunConfig
from roma.data.heldout import HELDOUT_SEED, heldout_refs, with_heldout_checksum
from roma.data.subsets import ranked_keys, subset_keys
from test_train_helpers import nano_config, write_pngs


def _refs_of(root):
    from roma.data.sources import list_images

    return tuple(list_images(root))


def test_heldout_from_the_source_is_beyond_every_subset(tmp_path):
    root = write_pngs(tmp_path / "src", n=40, size=8)
    d = DataConfig(root=str(root), subset=30, subset_seed=3, heldout_size=10)
    held = {r.key for r in heldout_refs(d)}
    assert len(held) == 10
    keys = [r.key for r in _refs_of(root)]
    for n in (1, 5, 17, 30):  # every nested subset that fits beside it
        assert not held & set(subset_keys(keys, n, 3))
    assert held == set(ranked_keys(keys, 3)[-10:])
    d2, problems = with_heldout_checksum(d, None, _refs_of)
    assert problems == [] and len(d2.heldout_checksum) == 64
    # the fingerprint (cacheable, no listing when cached) and the listing agree on the checksum
    from roma.data.subsets import keys_checksum

    assert d2.heldout_checksum == keys_checksum(sorted(held))


@pytest.mark.parametrize("subset, key, words", [
    (31, "data.subset", "31 training + 10 held-out images (data.heldout_size) exceed the 40 images"),
    (None, "data.heldout_size", "need data.subset (at most 30 of its 40 images; a spec's data.subset: null"),
])
def test_a_subset_that_would_reach_the_heldout_images_is_refused(tmp_path, subset, key, words):
    root = write_pngs(tmp_path / "src", n=40, size=8)
    _, problems = with_heldout_checksum(DataConfig(root=str(root), subset=subset, heldout_size=10), None, _refs_of)
    assert [k for k, _ in problems] == [key] and words in problems[0][1] and str(root) in problems[0][1]


def test_a_separate_heldout_root_is_its_first_images_in_a_fixed_order(tmp_path):
    train, held = write_pngs(tmp_path / "pool", n=12, size=8), write_pngs(tmp_path / "probe", n=20, size=8, seed=1)
    for f in sorted(held.iterdir()):  # other names than the pool's
        f.rename(held / f"h_{f.name}")
    d = DataConfig(root=str(train), heldout_root=str(held), heldout_size=5, subset_seed=7)
    keys = [r.key for r in heldout_refs(d)]
    assert keys == sorted(ranked_keys([r.key for r in _refs_of(held)], HELDOUT_SEED)[:5])  # not subset_seed's
    assert with_heldout_checksum(d, None, _refs_of)[1] == []


def test_a_heldout_root_sharing_images_with_the_training_data_is_refused(tmp_path):
    train = write_pngs(tmp_path / "pool", n=12, size=8)
    copy = write_pngs(tmp_path / "copy", n=12, size=8)  # same names: same keys
    _, problems = with_heldout_checksum(DataConfig(root=str(train), heldout_root=str(copy), heldout_size=4), None,
                                        _refs_of)
    ((key, msg),) = problems
    assert key == "data.heldout_root" and str(copy) in msg and str(train) in msg and "share 4 image(s)" in msg
    links = tmp_path / "links"  # other names, the same files (symlinked halves)
    links.mkdir()
    for f in sorted(train.iterdir())[:3]:
        os.symlink(f, links / f"other_{f.name}")
    _, problems = with_heldout_checksum(DataConfig(root=str(train), heldout_root=str(links), heldout_size=3), None,
                                        _refs_of)
    assert [k for k, _ in problems] == ["data.heldout_root"] and "share 3 image(s)" in problems[0][1]


@pytest.mark.parametrize("data, train, key", [
    ({"heldout_size": -1}, {}, "data.heldout_size"),
    ({"heldout_root": "/x"}, {}, "data.heldout_root"),
    ({}, {"val_every_steps": 5}, "train.val_every_steps"),
    ({"heldout_size": 4}, {"val_every_steps": -1}, "train.val_every_steps"),
])
def test_bad_heldout_values_are_refused_naming_the_key(data, train, key):
    from roma.validation import check_config

    cfg = RunConfig(data=DataConfig(root="/data", **data))
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, **train))
    errs = check_config(cfg, check_data=False)
    assert any(f": {key}: " in e for e in errs), errs


def test_heldout_root_leaves_the_id_only_with_its_checksum():
    a = RunConfig(data=DataConfig(root="/a", checksum="c" * 64, heldout_root="/h1", heldout_size=8))
    assert a.run_id != dataclasses.replace(a, data=dataclasses.replace(a.data, heldout_root="/h2")).run_id
    pinned = dataclasses.replace(a, data=dataclasses.replace(a.data, heldout_checksum="d" * 64))
    moved = dataclasses.replace(pinned, data=dataclasses.replace(pinned.data, heldout_root="/elsewhere"))
    assert pinned.run_id == moved.run_id
    other = dataclasses.replace(pinned, data=dataclasses.replace(pinned.data, heldout_checksum="e" * 64))
    assert other.run_id != pinned.run_id


# ----------------------------------------------------------------------------- the training loop
def _cfg(tmp_path: Path, name: str, **train) -> RunConfig:
    pool = write_pngs(tmp_path / "pool", n=16)
    held = tmp_path / "held"
    if not held.is_dir():
        write_pngs(held, n=12, seed=5)
        for f in sorted(held.iterdir()):
            f.rename(held / f"h_{f.name}")
    cfg = nano_config(pool, tmp_path / name, epochs=2, **train)
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, heldout_root=str(held), heldout_size=10))


def test_the_loop_reports_heldout_losses_and_trains_the_same_with_or_without_them(tmp_path):
    from roma.train.hooks import TrainHooks
    from roma.train.pretrain import pretrain

    class Record(TrainHooks):
        def __init__(self):
            self.logs = {}

        def on_log(self, step, metrics):
            self.logs[step] = metrics

    with_val, without = Record(), Record()
    cfg = _cfg(tmp_path, "a", val_every_steps=3)
    res = pretrain(cfg, tmp_path / "a", with_val)
    plain = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, heldout_size=0, heldout_root=""),
                                train=dataclasses.replace(cfg.train, val_every_steps=0))
    pretrain(plain, tmp_path / "b", without)
    total = res["total_steps"]
    assert total == 8
    val_steps = sorted(s for s, m in with_val.logs.items() if "val_loss" in m)
    assert val_steps == [3, 6, 8]  # every 3 steps and the last
    assert [with_val.logs[s]["loss"] for s in sorted(without.logs)] == [without.logs[s]["loss"] for s in sorted(without.logs)]
    last = with_val.logs[total]
    assert set(k for k in last if k.startswith("val_")) == {"val_loss", "val_loss_token", "val_loss_block_s2"}
    assert last["val_loss"] == pytest.approx(last["val_loss_token"] + 0.1 * last["val_loss_block_s2"], rel=1e-5)
    assert res["val"] == {k: v for k, v in last.items() if k.startswith("val_")}
    assert res["flops_per_image"] > 0 and res["images_trained"] == total * 4 and res["device_hours"] > 0


def test_heldout_loss_is_the_mean_over_images_whatever_the_rank_split(tmp_path, monkeypatch):
    import roma.train.heldout as heldout_mod
    from roma.data.dataset import collate
    from roma.data.heldout import build_heldout_dataset
    from roma.train.distributed import DistInfo
    from roma.train.heldout import heldout_losses
    from roma.train.pretrain import build_model

    cfg = _cfg(tmp_path, "a")
    dataset, info = build_heldout_dataset(cfg.data, cfg.model)
    assert info["heldout_size"] == 10
    model = build_model(cfg)
    cpu = torch.device("cpu")
    monkeypatch.setattr(heldout_mod, "all_reduce_mean", lambda x, dist: x)  # each rank's own share, no group
    whole = heldout_losses(model, dataset, collate, 3, cpu, None, DistInfo(0, 1, 0, cpu, False))
    parts = [heldout_losses(model, dataset, collate, 4, cpu, None, DistInfo(r, 3, r, cpu, False)) for r in range(3)]
    sizes = [4, 3, 3]  # rank r scores images r, r+3, ...
    for k, v in whole.items():
        assert sum(p[k] * n for p, n in zip(parts, sizes)) / 10 == pytest.approx(v, rel=1e-5)
    again = heldout_losses(model, dataset, collate, 5, cpu, None, DistInfo(0, 1, 0, cpu, False))
    assert again == pytest.approx(whole, rel=1e-6)  # the same inputs every time (fixed augmentation)


def test_heldout_images_that_changed_since_launch_stop_the_job(tmp_path):
    from roma.data.heldout import build_heldout_dataset

    cfg = _cfg(tmp_path, "a")
    d, _ = with_heldout_checksum(cfg.data)
    build_heldout_dataset(d, cfg.model)
    (Path(cfg.data.heldout_root) / "h_img_000.png").rename(Path(cfg.data.heldout_root) / "h_img_999.png")
    with pytest.raises(ValueError, match="held-out data at .* changed since this run was launched"):
        build_heldout_dataset(d, cfg.model)


def test_a_resumed_run_logs_each_validation_step_once(tmp_path):
    """Killed after a validation step was logged but before the next checkpoint: the resumed run
    recomputes that step and must not log it again; MLflow holds every validation step once."""
    from mlflow.tracking import MlflowClient

    from roma.run import execute
    from roma.tracking import tracking_uri
    from roma.train.hooks import TrainHooks

    cfg = _cfg(tmp_path, "out", val_every_steps=3, ckpt_every_steps=4)

    class KillAfter(TrainHooks):
        def on_log(self, step, metrics):
            if step == 7:  # val at 3 and 6 logged; last checkpoint at step 4
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        execute(cfg, hooks=KillAfter())
    result = execute(cfg)
    client = MlflowClient(tracking_uri(cfg))
    (run,) = client.search_runs([client.get_experiment_by_name(cfg.experiment).experiment_id])
    hist = client.get_metric_history(run.info.run_id, "val/loss")
    assert sorted(m.step for m in hist) == [3, 6, 8]
    assert run.data.metrics["val/loss"] == pytest.approx(result["val"]["val_loss"])
    assert run.data.metrics["train/flops"] == pytest.approx(3 * result["flops_per_image"] * 8 * 4)
    assert run.data.metrics["train/device_hours"] > 0


def test_the_launcher_check_refuses_an_overlapping_heldout_root_naming_both(tmp_path):
    from roma.validation import with_data_checksum

    train = write_pngs(tmp_path / "pool", n=12, size=8)
    cfg = RunConfig(data=DataConfig(root=str(train), heldout_root=str(train / ".." / "pool"), heldout_size=4))
    _, problems = with_data_checksum(cfg, lambda key: "spec.yaml")
    assert len(problems) == 1 and problems[0].startswith("spec.yaml: data.heldout_root: ")
    assert "share 4 image(s)" in problems[0]


def test_ablation_variants_score_the_same_heldout_tensors_and_the_token_loss_has_no_msp_term(tmp_path):
    """ARES / MSP settings change neither the held-out inputs nor their targets (built without ARES),
    and val_loss_token is the token loss alone: the comparable number across ablation variants."""
    from roma.data.dataset import collate
    from roma.train.distributed import DistInfo
    from roma.train.heldout import heldout_losses
    from roma.train.pretrain import build_heldout, build_model

    cfg = _cfg(tmp_path, "a")
    assert cfg.ares.enabled and cfg.ares.p == 1.0 and cfg.msp.enabled  # a training draw always rotates
    variants = {"baseline": dataclasses.replace(cfg, ares=dataclasses.replace(cfg.ares, enabled=False),
                                                msp=dataclasses.replace(cfg.msp, enabled=False)),
                "ares": dataclasses.replace(cfg, msp=dataclasses.replace(cfg.msp, enabled=False)),
                "ares_msp": cfg}
    seen: dict[str, list[dict[str, torch.Tensor]]] = {}
    cpu = torch.device("cpu")
    for name, c in variants.items():
        model = build_model(c)
        batches = seen[name] = []
        forward = model.forward

        def record(images, target=None, region=None, angle=None, _forward=forward, _batches=batches):
            _batches.append({"images": images.clone(), "target": target.clone(), "region": region.clone(),
                             "angle": angle.clone()})
            return _forward(images, target, region, angle)

        model.forward = record
        m = heldout_losses(model, build_heldout(c), collate, 4, cpu, None, DistInfo(0, 1, 0, cpu, False))
        assert "val_loss_token" in m, name  # logged for every run, MSP or not
        assert (m["val_loss"] == m["val_loss_token"]) == (not c.msp.enabled), name
    ref = seen["baseline"]
    assert sum(b["images"].shape[0] for b in ref) == 10
    for name in ("ares", "ares_msp"):
        assert len(seen[name]) == len(ref)
        for got, want in zip(seen[name], ref):
            for k in want:
                assert torch.equal(got[k], want[k]), (name, k)
    assert all(torch.equal(b["target"], b["images"]) and not b["region"].any() for b in ref)  # nothing rotated

    # the token loss excludes the MSP term: another MSP weight on the same weights leaves it unchanged
    model = build_model(cfg)
    heavy = build_model(dataclasses.replace(cfg, msp=dataclasses.replace(cfg.msp, weight=0.5)))
    heavy.load_state_dict(model.state_dict())
    dist = DistInfo(0, 1, 0, cpu, False)
    light_m = heldout_losses(model, build_heldout(cfg), collate, 4, cpu, None, dist)
    heavy_m = heldout_losses(heavy, build_heldout(cfg), collate, 4, cpu, None, dist)
    assert light_m["val_loss_token"] == heavy_m["val_loss_token"]
    assert heavy_m["val_loss"] - light_m["val_loss"] == pytest.approx(0.4 * light_m["val_loss_block_s2"], rel=1e-4)
    assert light_m["val_loss"] > light_m["val_loss_token"]


# ----------------------------------------------------------------------------- the largest subset
def test_the_largest_subset_is_the_source_less_its_heldout_images():
    from roma.data.heldout import largest_subset

    assert largest_subset(DataConfig(heldout_size=512), 4_000_000) == 3_999_488
    assert largest_subset(DataConfig(heldout_size=0), 4_000_000) == 4_000_000
    assert largest_subset(DataConfig(heldout_root="/h", heldout_size=512), 4_000_000) == 4_000_000  # a source of its own
    with pytest.raises(ValueError, match="512 held-out images leave nothing to train on in the 512 images"):
        largest_subset(DataConfig(root="/d", heldout_size=512), 512)


def test_a_spec_subset_null_is_the_source_less_its_heldout_images(tmp_path):
    from roma.spec import load_spec
    from roma.validation import ConfigError

    data = tmp_path / "images.txt"
    data.write_text("".join(f"c/{i}.jpg\n" for i in range(300)))
    # quickstart: 256 held-out images drawn from data.root
    (cfg,) = load_spec("quickstart", {"data.subset": None, "output_root": str(tmp_path / "out")},
                       data_root=str(data)).runs
    assert cfg.data.subset == 300 - 256 and cfg.data.nominal_total is None
    keys = [f"c/{i}.jpg" for i in range(300)]
    assert not set(subset_keys(keys, 44, 0)) & set(ranked_keys(keys, 0)[-256:])  # the subset is all but them
    assert cfg.run_id == load_spec("quickstart", {"data.subset": 44, "output_root": str(tmp_path / "out")},
                                   data_root=str(data)).runs[0].run_id  # null is that number, nothing else
    small = tmp_path / "small.txt"
    small.write_text("".join(f"c/{i}.jpg\n" for i in range(200)))
    with pytest.raises(ConfigError, match="256 held-out images leave nothing to train on in the 200 images"):
        load_spec("quickstart", {"data.subset": None}, data_root=str(small))
    # data.nominal_total sizes it without data, and stays out of the run id
    (plan,) = load_spec("quickstart", {"data.subset": None, "data.root": str(tmp_path / "absent"),
                                       "data.nominal_total": 1000}, dry_run=True).runs
    assert plan.data.subset == 744
    assert plan.run_id == dataclasses.replace(plan, data=dataclasses.replace(plan.data, nominal_total=5)).run_id
