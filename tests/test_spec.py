"""roma.spec: built-in specs, composition, sweeps, --set, named validation errors, run ids."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from roma.naming import format_size, run_name
from roma.spec import REPO_ROOT, list_specs, load_spec, parse_set, select
from roma.validation import ConfigError, build_config

# Every spec of runs in experiments/specs and how many runs it expands to.
EXPECTED_RUNS = {
    "scaling_data": 7, "scaling_model": 4, "ablation_ares_msp": 3, "ablation_descriptor": 3,
    "ablation_msp_scales": 4, "ablation_lambda": 4,
    "scaling_data_micro": 15, "scaling_data_micro_fixed_steps": 15, "scaling_model_micro": 9, "scaling_joint_micro": 45,
    "ablation_ares_msp_micro": 9,
    "ablation_descriptor_micro": 9, "ablation_msp_scales_micro": 12, "ablation_lambda_micro": 12,
    "quickstart": 1,
}
NOT_RUN_SPECS = {"highres_benchmark"}  # benchmarks/highres.py's input, not a spec of runs
# The micro study's specs probe the held-out half of AID (outputs/micro_data/aid_probe, made by
# experiments/micro_split.py); tests that check the file system point the probe at their folder.
STUDY_SPECS = {n for n in EXPECTED_RUNS if n.endswith("_micro")}


def probe_at(root) -> dict:
    """The probe at `root`; the held-out images (data.heldout_root, the probe half in the study) at the
    image_folder fixture's second manifest."""
    return {"eval.probes": [{"dataset": "aid", "root": str(root), "train_ratios": [0.5], "protocol": "fast"}],
            "data.heldout_root": str(Path(root).with_name("heldout.txt"))}


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory) -> Path:
    """A 6000-image manifest (one path per line): a data root counted without touching images."""
    root = tmp_path_factory.mktemp("data") / "images.txt"
    root.write_text("".join(f"class{i % 3}/{i}.jpg\n" for i in range(6000)))
    root.with_name("heldout.txt").write_text("".join(f"class{i % 3}/h{i}.jpg\n" for i in range(300)))
    return root


def test_folder_roots_are_counted(tmp_path):
    for c in range(2):
        (tmp_path / f"class{c}").mkdir()
        for i in range(5):
            (tmp_path / f"class{c}" / f"{i}.jpg").touch()
    (tmp_path / "class0" / "notes.txt").touch()  # not an image
    load_spec("quickstart", {"data.subset": 10, "data.heldout_size": 0, "train.val_every_steps": 0}, data_root=str(tmp_path))
    assert "(10 images)" in errors_of("quickstart", {"data.subset": 11, "data.heldout_size": 0, "train.val_every_steps": 0}, data_root=str(tmp_path))


@pytest.fixture
def paper_env(tmp_path: Path, monkeypatch) -> None:
    """Paper specs read their roots from the environment; a shard pattern is not counted."""
    shards = tmp_path / "shards"
    shards.mkdir()
    (shards / "part-000000.tar").touch()
    aid = tmp_path / "aid"
    aid.mkdir()
    monkeypatch.setenv("ROMA_PRETRAIN_DATA", str(shards / "part-{000000..000099}.tar"))
    monkeypatch.setenv("ROMA_AID", str(aid))
    for var in ("ROMA_UCM", "ROMA_OSCD", "ROMA_SPACENET"):  # the paper's downstream suite
        (tmp_path / var).mkdir()
        monkeypatch.setenv(var, str(tmp_path / var))


def write_spec(dirpath: Path, name: str, body: dict | str) -> Path:
    p = dirpath / f"{name}.yaml"
    p.write_text(body if isinstance(body, str) else yaml.safe_dump(body, sort_keys=False))
    return p


def errors_of(*args, **kwargs) -> str:
    with pytest.raises(ConfigError) as e:
        load_spec(*args, **kwargs)
    return str(e.value)


def test_builtin_spec_list_is_covered():
    assert set(list_specs(runs_only=True)) - NOT_RUN_SPECS == set(EXPECTED_RUNS)


@pytest.mark.parametrize("name", sorted(EXPECTED_RUNS))
def test_builtin_specs_validate_and_expand(name, image_folder, paper_env):
    micro = name.endswith("_micro") or name == "quickstart"
    # the paper specs' subsets (62.5K..4M images) are larger than any test data: their file checks
    # are covered by the micro specs and the data-check tests
    spec = load_spec(name, probe_at(image_folder) if name in STUDY_SPECS else None,
                     data_root=str(image_folder) if micro else None, check_data=micro)
    assert len(spec.runs) == EXPECTED_RUNS[name]
    ids = [r.run_id for r in spec.runs]
    names = spec.names()
    assert len(set(ids)) == len(ids) and len(set(names)) == len(names)
    for cfg, rn in zip(spec.runs, names):
        assert re.fullmatch(r"roma_\w+-(\d+(\.\d+)?[KM]?|all)-seed\d+(-.+)?", rn), rn
        assert cfg.experiment == name
        assert cfg.model.img_size % (cfg.model.patch_size * cfg.model.cluster_size) == 0
        if micro:
            assert cfg.model.name.startswith("roma_micro_")
            # a few hundred steps, or (the study) at most 8 epochs' worth of 5000 images
            from roma.train.batching import schedule

            assert cfg.train.max_steps <= 300 if cfg.train.max_steps else \
                schedule(cfg.train, cfg.data.subset).images_seen <= 40000
            assert cfg.eval.probes and cfg.eval.probes[0].root == str(image_folder)


def test_quickstart_on_real_aid(aid_root):
    spec = load_spec("quickstart")  # default root ../shared/data/AID relative to the repo root
    (cfg,) = spec.runs
    assert Path(cfg.data.root) == aid_root.resolve()
    assert run_name(cfg) == "roma_micro_tiny-2.5K-seed0"
    assert (cfg.model.img_size, cfg.model.patch_size) == (96, 8)


def test_scaling_data_sizes_and_names(paper_env):
    spec = load_spec("scaling_data", check_data=False)
    # the largest point is the source less its 512 held-out images; without data, of data.nominal_total
    assert [r.data.subset for r in spec.runs] == [62500, 125000, 250000, 500000, 1000000, 2000000, 3999488]
    assert spec.names()[0] == "roma_base-62.5K-seed0" and spec.names()[-1] == "roma_base-3.999M-seed0"
    assert dict(spec.runs[2].sweep) == {"data.subset": 250000}
    # each model of scaling_model takes its geometry from the registry
    sm = load_spec("scaling_model", check_data=False)
    assert [r.model.name for r in sm.runs] == ["roma_tiny", "roma_small", "roma_base", "roma_large"]
    assert all((r.model.img_size, r.model.patch_size) == (192, 16) for r in sm.runs)


def test_format_size():
    assert [format_size(n) for n in (62500, 250000, 4000000, 312, 1250, 5000, None)] == \
        ["62.5K", "250K", "4M", "312", "1.25K", "5K", "all"]


# ------------------------------------------------------------------ composition and sweeps

def test_grid_zip_and_file_base(tmp_path, image_folder):
    write_spec(tmp_path, "parent", {"base": "micro", "train": {"max_steps": 7}, "data.subset": 100})
    p = write_spec(tmp_path, "child", {
        "base": "parent.yaml", "train.global_batch": 8,
        "grid": {"data.subset": [100, 200], "train.seed": [0, 1, 2]},
        "zip": {"label": ["plain", "msp"], "msp.enabled": [False, True], "msp.weight": [0.1, 0.3]},
    })
    spec = load_spec(p, data_root=str(image_folder))
    assert len(spec.runs) == 2 * 3 * 2
    first = spec.runs[0]
    assert (first.train.max_steps, first.train.global_batch) == (7, 8)  # parent + child layers
    assert spec.names()[:2] == ["roma_micro_tiny-100-seed0-plain", "roma_micro_tiny-100-seed0-msp"]
    assert dict(spec.runs[1].sweep) == {"data.subset": 100, "train.seed": 0, "label": "msp",
                                        "msp.enabled": True, "msp.weight": 0.3}
    assert {(r.msp.enabled, r.msp.weight) for r in spec.runs} == {(False, 0.1), (True, 0.3)}
    assert len(select(spec.runs, "*-200-seed2-*")) == 2
    assert len(select(spec.runs, spec.runs[0].run_id)) == 1


def test_unlabelled_axis_names_runs(tmp_path, image_folder):
    p = write_spec(tmp_path, "lam", {"base": "micro", "grid": {"msp.weight": [0.05, 0.5], "msp.scales": [[2, 4]]}})
    names = load_spec(p, data_root=str(image_folder)).names()
    assert names == ["roma_micro_tiny-all-seed0-weight=0.05-scales=2+4", "roma_micro_tiny-all-seed0-weight=0.5-scales=2+4"]


def test_set_overrides_are_yaml_typed(image_folder):
    assert parse_set(["a=1", "b=0.5", "c=[2, 4]", "d=true", "e=null", "f=roma_small", "g="]) == \
        {"a": 1, "b": 0.5, "c": [2, 4], "d": True, "e": None, "f": "roma_small", "g": ""}
    with pytest.raises(ConfigError, match="expected key=value"):
        parse_set(["noequals"])
    sets = parse_set(["model=roma_micro_small", "data.subset=250", "msp.scales=[2,4]", "train.blr=1e-3"])
    (cfg,) = load_spec("quickstart", sets, data_root=str(image_folder)).runs
    assert (cfg.model.name, cfg.data.subset, cfg.msp.scales, cfg.train.blr) == ("roma_micro_small", 250, (2, 4), 1e-3)
    assert cfg.model.img_size == 96  # geometry follows the new model's registry entry


def test_set_reaches_one_entry_of_a_list(image_folder):
    # `eval.probes[0].epochs=3`: one field of one evaluation; the others and the base keep theirs
    sets = parse_set(["eval.probes[0].epochs=3", "eval.probes[0].seeds=[4, 5]"])
    (cfg,) = load_spec("quickstart", sets, data_root=str(image_folder)).runs
    (plain,) = load_spec("quickstart", data_root=str(image_folder)).runs
    assert (cfg.eval.probes[0].epochs, cfg.eval.probes[0].seeds) == (3, (4, 5))
    assert cfg.eval.probes[0].dataset == plain.eval.probes[0].dataset and cfg.run_id != plain.run_id
    paper = load_spec("scaling_data", parse_set(["eval.dense[0].batch_size=16"]), check_data=False,
                      require_env=False, dry_run=True).runs[0]
    assert [d.batch_size for d in paper.eval.dense] == [16, 8]
    fresh = load_spec("scaling_data", check_data=False, require_env=False, dry_run=True).runs[0]
    assert fresh.eval.dense[0].batch_size == 32  # the recipe itself is untouched
    msg = errors_of("quickstart", {"eval.probes[2].epochs": 3, "eval.dense[0].batch_size": 4, "eval.probes[0].epoch": 3},
                    data_root=str(image_folder))
    assert "--set: eval.probes[2].epochs: eval.probes has 1 entry (indices 0..0)" in msg
    assert "--set: eval.dense[0].batch_size: eval.dense is not a list in this spec" in msg
    assert "--set: unknown key 'eval.probes[0].epoch' (did you mean 'eval.probes[0].epochs'?)" in msg


# ------------------------------------------------------------------ named errors

def test_unknown_key_names_file_and_suggests(tmp_path, image_folder):
    p = write_spec(tmp_path, "typo", {"base": "micro", "train": {"globalbatch": 8}, "gird": {"train.seed": [0]}})
    msg = errors_of(p, data_root=str(image_folder))
    assert f"{p.resolve()}: unknown key 'train.globalbatch' (did you mean 'train.global_batch'?)" in msg
    assert "unknown key 'gird' (did you mean 'grid'?)" in msg
    msg = errors_of("quickstart", {"train.lr": 1e-3}, data_root=str(image_folder))
    assert "--set: unknown key 'train.lr' (did you mean 'train.blr'?)" in msg
    msg = errors_of(write_spec(tmp_path, "ax", {"base": "micro", "grid": {"msp.wieght": [0.1]}}),
                    data_root=str(image_folder))
    assert "sweep axis 'msp.wieght' is not a config key (did you mean 'msp.weight'?)" in msg


def test_wrong_type(image_folder):
    msg = errors_of("quickstart", {"train.global_batch": "big", "msp.enabled": 1, "data.crop_scale": [0.2]},
                    data_root=str(image_folder))
    assert "--set: train.global_batch: expected int, got str 'big'" in msg
    assert "msp.enabled: expected bool, got int 1" in msg
    assert "data.crop_scale: expected 2 values, got 1" in msg


def test_impossible_values(image_folder):
    msg = errors_of("quickstart", {"model.img_size": 100}, data_root=str(image_folder))
    assert "model.img_size: 100 is not divisible by patch_size x cluster_size = 8 x 4 = 32" in msg
    msg = errors_of("quickstart", {"data.subset": 7000}, data_root=str(image_folder))
    assert "data.subset: subset of 7000 images is larger than the dataset" in msg and "(6000 images)" in msg
    msg = errors_of("quickstart", {"msp.scales": [5]}, data_root=str(image_folder))
    assert "msp.scales: block size 5 does not divide the 12x12 patch grid" in msg
    msg = errors_of("quickstart", {"resources.time_min": 2}, data_root=str(image_folder))
    assert "resources.time_min" in msg and "signal_delay_s" in msg


def test_subset_checked_against_manifest(tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,class\n" + "".join(f"a/{i}.jpg,a\n" for i in range(300)))
    load_spec("quickstart", {"data.subset": 300, "data.heldout_size": 0, "train.val_every_steps": 0, "eval.probes": []}, data_root=str(manifest))
    msg = errors_of("quickstart", {"data.subset": 301, "data.heldout_size": 0, "train.val_every_steps": 0,
                                   "eval.probes": []},
                    data_root=str(manifest))
    assert "(300 images)" in msg


def test_missing_root_and_unknown_model(tmp_path):
    msg = errors_of("quickstart", {"model": "roma_tinny"}, data_root=str(tmp_path / "nowhere"))
    assert f"--data-root: data.root: data root {tmp_path / 'nowhere'} does not exist" in msg
    assert "--set: model.name: unknown model 'roma_tinny' (did you mean 'roma_tiny'?)" in msg
    msg = errors_of("quickstart", {"data.root": ""})
    assert "data.root: missing data root" in msg


def test_unset_environment_variable_is_named(monkeypatch):
    monkeypatch.delenv("ROMA_PRETRAIN_DATA", raising=False)
    monkeypatch.delenv("ROMA_AID", raising=False)
    msg = errors_of("scaling_data")
    assert "data.root: environment variable ROMA_PRETRAIN_DATA is not set" in msg
    assert "scaling_data.yaml (base 'paper')" in msg


def test_zip_lengths_and_base_errors(tmp_path, image_folder):
    p = write_spec(tmp_path, "z", {"base": "micro", "zip": {"label": ["a", "b"], "msp.weight": [0.1]}})
    assert "zip: axes must be non-empty lists of one length" in errors_of(p, data_root=str(image_folder))
    p = write_spec(tmp_path, "b", {"base": "mikro"})
    assert "base: 'mikro' is neither a built-in base" in errors_of(p)
    write_spec(tmp_path, "c1", {"base": "c2.yaml"})
    p = write_spec(tmp_path, "c2", {"base": "c1.yaml"})
    assert "base cycle" in errors_of(p)
    p = write_spec(tmp_path, "dup", {"base": "micro", "zip": {"label": ["a", "b"], "msp.weight": [0.1, 0.1]}})
    assert "give the same config" in errors_of(p, data_root=str(image_folder))
    p = write_spec(tmp_path, "bench", {"kind": "benchmark"})
    assert "not a spec of runs" in errors_of(p)


# ------------------------------------------------------------------ run ids

def test_run_id_stable_and_sensitive(image_folder, tmp_path):
    a = load_spec("quickstart", data_root=str(image_folder)).runs[0]
    b = load_spec("quickstart", data_root=str(image_folder)).runs[0]
    assert a.run_id == b.run_id and re.fullmatch(r"[0-9a-f]{10}", a.run_id)
    # round trip through config.yaml gives the same id
    assert build_config(yaml.safe_load(yaml.safe_dump(a.to_dict()))).run_id == a.run_id
    # where/how it runs does not change the id; what it computes does
    same = {"output_root": str(tmp_path), "resources.cpus_per_task": 1, "tracking_uri": "sqlite:///x.db"}
    assert load_spec("quickstart", same, data_root=str(image_folder)).runs[0].run_id == a.run_id
    for key, value in [("data.subset", 2000), ("train.seed", 1), ("msp.weight", 0.2), ("model", "roma_micro_small")]:
        assert load_spec("quickstart", {key: value}, data_root=str(image_folder)).runs[0].run_id != a.run_id, key


def test_set_fixes_a_grid_axis_but_not_a_zipped_one(image_folder):
    spec = load_spec("scaling_data_micro", {"train.seed": 1, **probe_at(image_folder)}, data_root=str(image_folder))
    assert len(spec.runs) == 5 and {r.train.seed for r in spec.runs} == {1}
    assert all("train.seed" not in dict(r.sweep) for r in spec.runs)
    msg = errors_of("ablation_ares_msp_micro", {"msp.enabled": True, **probe_at(image_folder)},
                    data_root=str(image_folder))
    assert "--set: msp.enabled: is a zipped sweep axis" in msg


PAPER_SPECS = ("scaling_data", "scaling_model", "ablation_ares_msp", "ablation_descriptor", "ablation_lambda",
               "ablation_msp_scales")


@pytest.mark.parametrize("name", PAPER_SPECS)
def test_paper_specs_run_the_released_downstream_suite(name, paper_env):
    from roma.eval.plan import evaluation_data, evaluations

    for cfg in load_spec(name, check_data=False).runs:
        evs = {n: sub for n, _, sub, _ in evaluations(cfg)}
        assert list(evs) == ["probe_aid_full_v3_cls_tr20", "probe_aid_full_v3_cls_tr50", "probe_ucm_full_v3_cls",
                             "dense_oscd_v3", "dense_spacenet_v3"]
        for n in list(evs)[:3]:
            p = evs[n]
            assert (p.protocol, p.img_size, p.scan, p.epochs, p.batch_size, p.blr) == ("full", 224, "v3", 200, 512, 1.5e-3)
        assert [evs[n].train_ratios for n in list(evs)[:3]] == [(0.2,), (0.5,), (0.5,)]
        oscd, spacenet = evs["dense_oscd_v3"], evs["dense_spacenet_v3"]
        assert (oscd.img_size, oscd.crop_size, oscd.lr, oscd.layer_decay, oscd.epochs) == (768, 96, 6e-5, 0.75, 100)
        assert (spacenet.crop_size, spacenet.layer_decay, spacenet.max_steps, spacenet.slide_stride) == \
            (384, 0.9, 160_000, 256)
        data = evaluation_data(cfg)
        assert [d.env for d in data] == ["ROMA_AID", "ROMA_AID", "ROMA_UCM", "ROMA_OSCD", "ROMA_SPACENET"]
        assert all(d.present for d in data)


def test_paper_spec_missing_eval_root_names_the_variable(paper_env, monkeypatch, tmp_path):
    from roma.eval.plan import evaluation_data

    monkeypatch.delenv("ROMA_OSCD")
    with pytest.raises(ConfigError, match="ROMA_OSCD is not set"):
        load_spec("scaling_data", check_data=False)
    monkeypatch.setenv("ROMA_OSCD", str(tmp_path / "nowhere"))
    with pytest.raises(ConfigError, match=r"nowhere does not exist \(set ROMA_OSCD"):
        load_spec("scaling_data")
    monkeypatch.delenv("ROMA_OSCD")
    cfg = load_spec("scaling_data", check_data=False, require_env=False).runs[0]  # a dry run's view
    missing = [(d.name, d.env) for d in evaluation_data(cfg) if not d.present]
    assert missing == [("dense_oscd_v3", "ROMA_OSCD")]


def test_micro_study_specs_default_to_the_disjoint_split():
    pool, probe = REPO_ROOT / "outputs" / "micro_data" / "aid_pool", REPO_ROOT / "outputs" / "micro_data" / "aid_probe"
    for name in sorted(STUDY_SPECS):
        for cfg in load_spec(name, check_data=False).runs:
            assert Path(cfg.data.root) == pool and [Path(p.root) for p in cfg.eval.probes] == [probe], name
            # the paper's compute design: a fixed number of epochs per subset, no step cap (the
            # fixed-steps control: the same steps for every subset instead)
            assert cfg.train.max_steps is None and cfg.train.epochs == 8, name
            assert cfg.train.steps == (312 if name == "scaling_data_micro_fixed_steps" else None), name


def test_micro_study_msp_is_coarser_than_the_prediction_cluster():
    """The micro study's MSP adds a coarser scale: every block is larger than the cluster (at 64 px a
    4x4-patch block used to be exactly one 4x4-patch cluster), and no advisory is printed for it."""
    for name in sorted(STUDY_SPECS - {"ablation_msp_scales_micro"}):
        spec = load_spec(name, check_data=False)
        assert spec.notes == [], name
        for cfg in spec.runs:
            grid = cfg.model.img_size // cfg.model.patch_size
            assert (grid, cfg.model.cluster_size, cfg.msp.scales) == (8, 2, (4,)), name
            assert all(s > cfg.model.cluster_size for s in cfg.msp.scales), name
    # the scale ablation keeps the paper's geometry (4x4-patch clusters on a 12x12 grid)
    for cfg in load_spec("ablation_msp_scales_micro", check_data=False).runs:
        assert (cfg.model.img_size // cfg.model.patch_size, cfg.model.cluster_size) == (12, 4)


def test_an_msp_block_equal_to_the_cluster_is_noted_not_refused(tmp_path, image_folder, capsys):
    """Decision: a note naming msp.scales, not a refusal: the paper's own scale ablation has the row
    (block 4 with 4x4-patch clusters) and means it."""
    import json

    from roma.config import ModelConfig, MspConfig, RunConfig
    from roma.launch import cli
    from roma.validation import advisories, check_config

    cfg = RunConfig(model=ModelConfig(name="roma_micro_tiny", img_size=64, patch_size=8, cluster_size=4),
                    msp=MspConfig(scales=(2, 4)))
    (note,) = advisories(cfg, lambda key: "my.yaml")
    assert note.startswith("my.yaml: msp.scales: block size 4 equals model.cluster_size 4") and "not multi-scale" in note
    assert not any("msp.scales" in e for e in check_config(cfg, check_data=False))
    off = RunConfig(model=cfg.model, msp=MspConfig(enabled=False, scales=(4,)))
    assert advisories(off) == [] and advisories(RunConfig(model=cfg.model, msp=MspConfig(scales=(8,)))) == []

    spec = load_spec("ablation_msp_scales", check_data=False, require_env=False, dry_run=True)
    assert len(spec.notes) == 1 and "ablation_msp_scales.yaml (zip): msp.scales: block size 4" in spec.notes[0]
    body = write_spec(tmp_path, "same_scale", {"base": "micro", "model.img_size": 64, "msp.scales": [4],
                                               "output_root": str(tmp_path / "out")})
    assert cli.main([str(body), "--data-root", str(image_folder), "--dry-run", "--skip-data-check"]) == 0
    out = capsys.readouterr().out
    assert f"note: {body}: msp.scales: block size 4 equals model.cluster_size 4" in out
    assert cli.main([str(body), "--data-root", str(image_folder), "--dry-run", "--json"]) == 0
    assert any("msp.scales: block size 4" in n for n in json.loads(capsys.readouterr().out)["notes"])
