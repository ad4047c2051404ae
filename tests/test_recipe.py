"""The paper's recipe and the dry run: global batch over any world size, epochs, steps, images
seen, GPU-hour estimates, and planning a study with no data and no environment variables."""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from roma.config import ResourcesConfig, TrainConfig
from roma.launch.cli import main
from roma.spec import REPO_ROOT, load_spec
from roma.train.batching import BatchLayoutError, layout, schedule

PAPER_ENV = ("ROMA_PRETRAIN_DATA", "ROMA_AID", "ROMA_UCM", "ROMA_OSCD", "ROMA_SPACENET")


@pytest.fixture
def no_env(monkeypatch):
    for var in PAPER_ENV:
        monkeypatch.delenv(var, raising=False)


def dry_json(capsys, *args: str) -> dict:
    assert main([*args, "--dry-run", "--json"]) == 0
    return json.loads(capsys.readouterr().out)


# ------------------------------------------------------------------ the batch layout

@pytest.mark.parametrize("world", [1, 2, 4, 8, 16, 32, 64, 128, 256])
def test_the_effective_batch_is_the_global_batch_at_every_world_size(world):
    lay = layout(256, world, 64)
    assert lay.world_size * lay.device_batch * lay.accum_steps == 256
    assert lay.device_batch <= 64 and lay.per_rank == 256 // world


def test_layouts():
    assert (layout(256, 1, 64).device_batch, layout(256, 1, 64).accum_steps) == (64, 4)  # one device: accumulate
    assert (layout(256, 4, 64).device_batch, layout(256, 4, 64).accum_steps) == (64, 1)
    assert (layout(256, 32, 64).device_batch, layout(256, 32, 64).accum_steps) == (8, 1)
    assert (layout(192, 2, 64).device_batch, layout(192, 2, 64).accum_steps) == (48, 2)  # 96 does not fit 64
    with pytest.raises(BatchLayoutError, match="256 cannot be split evenly over 3 ranks.*2 or 4"):
        layout(256, 3, 64)


def test_schedule_is_epochs_of_whole_global_batches():
    s = schedule(TrainConfig(), 62_500)  # 400 epochs, 40 warm-up, global batch 256
    assert (s.steps_per_epoch, s.total_steps, s.warmup_steps) == (244, 97_600, 9_760)
    assert s.images_seen == 97_600 * 256 and s.data_size == 62_500
    capped = schedule(TrainConfig(global_batch=32, max_steps=200), 2500)
    assert (capped.total_steps, capped.images_seen) == (200, 6400)
    with pytest.raises(ValueError, match="no full step"):
        schedule(TrainConfig(), 100)


def test_the_run_id_holds_the_global_batch_not_the_world_size(no_env):
    (cfg,) = load_spec("scaling_data", {"data.subset": 62500}, dry_run=True).runs
    moved = dataclasses.replace(cfg, resources=ResourcesConfig(nodes=4, gpus_per_node=8),
                                train=dataclasses.replace(cfg.train, max_device_batch=8))
    assert moved.run_id == cfg.run_id  # cluster shape and memory bound: how, not what
    bigger = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, global_batch=512))
    assert bigger.run_id != cfg.run_id


def test_old_batch_keys_name_their_replacement(no_env):
    from roma.validation import ConfigError

    with pytest.raises(ConfigError, match="train.batch_size.*set train.global_batch"):
        load_spec("quickstart", {"train.batch_size": 64}, dry_run=True)


# ------------------------------------------------------------------ the paper specs

def test_paper_recipe_in_the_specs(no_env):
    for name in ("scaling_data", "ablation_ares_msp", "ablation_lambda"):
        for cfg in load_spec(name, dry_run=True).runs:
            t = cfg.train
            assert (t.global_batch, t.epochs, t.warmup_epochs, t.blr, t.max_steps) == (256, 400, 40, 1.5e-4, None)
    epochs = {c.model.name: (c.train.epochs, c.train.warmup_epochs) for c in load_spec("scaling_model", dry_run=True).runs}
    assert epochs == {"roma_tiny": (400, 40), "roma_small": (400, 40), "roma_base": (400, 40), "roma_large": (300, 40)}
    # the ablations: 125K images (between the paper's 62.5K and 250K points), the +ARES+MSP row
    # is scaling_data's 125K run
    abl = {dict(c.sweep)["label"]: c for c in load_spec("ablation_ares_msp", dry_run=True).runs}
    assert {c.data.subset for c in abl.values()} == {125_000}
    same = [c for c in load_spec("scaling_data", dry_run=True).runs if c.data.subset == 125_000]
    assert abl["ares_msp"].run_id == same[0].run_id


# ------------------------------------------------------------------ the dry run

def test_dry_run_json_is_the_same_study_on_every_cluster(no_env, capsys):
    a100 = dry_json(capsys, "scaling_data", "--profile", "example_a100")
    h100 = dry_json(capsys, "scaling_data", "--profile", "example_h100_multinode")
    local = dry_json(capsys, "scaling_data")
    assert [r["run_id"] for r in a100["runs"]] == [r["run_id"] for r in h100["runs"]] == \
        [r["run_id"] for r in local["runs"]]
    # no data: the subset sizes; the largest (null) is data.nominal_total less the 512 held-out images
    subsets = [62_500, 125_000, 250_000, 500_000, 1_000_000, 2_000_000, 4_000_000 - 512]
    for plan in (a100, h100):
        runs = plan["runs"]
        assert [r["data_size"] for r in runs] == subsets
        assert runs[-1]["name"] == "roma_base-3.999M-seed0" and runs[-1]["config"]["data"]["subset"] == 3_999_488
        assert any("planned from data.nominal_total: 4,000,000 less 512 held-out images = 3,999,488" in n
                   for n in plan["notes"])
        assert all((r["global_batch"], r["epochs"]) == (256, 400) for r in runs)
        assert [r["steps"] for r in runs] == [400 * (n // 256) for n in subsets]
        assert [r["images_seen"] for r in runs] == [400 * (n // 256) * 256 for n in subsets]
        assert all(r["config"]["train"]["global_batch"] == 256 and r["evaluations"] for r in runs)
        assert all(set(r) >= {"run_id", "name", "config", "global_batch", "epochs", "steps", "images_seen",
                              "evaluations", "estimate"} for r in runs)
        assert any("ROMA_PRETRAIN_DATA is not set" in w for w in plan["warnings"])
    assert [r["layout"]["world_size"] for r in a100["runs"]] == [4] * 7
    assert {(r["layout"]["device_batch"], r["layout"]["accum_steps"]) for r in h100["runs"]} == {(8, 1)}
    est = a100["runs"][0]["estimate"]
    assert (est["gpu_type"], est["gpu_count"], est["throughput_row"]) == ("a100", 4, "roma_base@192/a100")
    # 24,985,600 images at 175.2 img/s per A100, 4 of them (the table's scaled row)
    assert est["gpu_hours"] == pytest.approx(24_985_600 / 175.2 / 3600, rel=1e-3)
    assert est["wall_hours"] == pytest.approx(est["gpu_hours"] / 4, rel=1e-3)
    assert h100["runs"][0]["estimate"]["gpu_count"] == 32


def test_dry_run_table_shows_recipe_steps_evaluations_and_estimate(no_env, capsys):
    assert main(["scaling_model", "--dry-run", "--profile", "example_h100_multinode"]) == 0
    out = capsys.readouterr().out
    large = next(line for line in out.splitlines() if "roma_large-3.999M" in line)
    assert "  300  " in large and "  256  " in large and "32x8x1" in large and "4,686,900" in large
    assert "total: " in out and "H100-hours" in out and "probe_aid" in out.split("evaluations: ")[1]
    assert "warning: " in out and "ROMA_PRETRAIN_DATA is not set" in out and "nothing launched" in out


@pytest.fixture(scope="module")
def source_of_4m(tmp_path_factory) -> Path:
    """A manifest of exactly 4,000,000 images (OpticalRS-4M's count; the files need not exist for a plan)."""
    path = tmp_path_factory.mktemp("rs4m") / "images.txt"
    path.write_text("".join(f"part{i // 100_000:02d}/img_{i:07d}.jpg\n" for i in range(4_000_000)))
    return path


def test_the_paper_studies_plan_every_run_on_a_source_of_exactly_4m_images(no_env, capsys, monkeypatch, source_of_4m):
    """Held-out images drawn from the same source used to refuse every 4M run (4M + 512 > 4M): the
    largest point is now the source less them, 3,999,488 images, with that size in its name."""
    monkeypatch.setenv("ROMA_PRETRAIN_DATA", str(source_of_4m))
    for spec, runs, total in (("scaling_data", 7, "5,033"), ("scaling_model", 4, "9,773")):
        assert main([spec, "--dry-run", "--profile", "example_a100"]) == 0
        out = capsys.readouterr().out
        assert f"total: {total} A100-hours for {runs} of {runs} runs" in out, out
        assert "exceed" not in out and "need data.subset" not in out and "nominal_total" not in out
        plan = dry_json(capsys, spec, "--profile", "example_a100")
        assert len(plan["runs"]) == runs and all(r["estimate"]["gpu_hours"] > 0 for r in plan["runs"])
        largest = [r for r in plan["runs"] if r["data_size"] == 3_999_488]
        assert len(largest) == (1 if spec == "scaling_data" else 4)
        assert all("-3.999M-" in r["name"] and r["config"]["data"]["heldout_checksum"] for r in largest)
        assert {r["steps"] for r in largest} == ({6_249_200} if spec == "scaling_data" else {6_249_200, 4_686_900})


# the paper's "batch 256": global (the default, lr 1.5e-4) or ARM's 256 per GPU x 8 (2,048, lr 1.2e-3), docs/specs.md
READINGS = {"global_256": ([], 256, 1.5e-4), "arm_2048": (["--set", "train.global_batch=2048"], 2048, 1.2e-3)}


def test_both_batch_readings_plan_at_4m_with_their_steps_lr_and_budget(no_env, capsys, monkeypatch, source_of_4m):
    monkeypatch.setenv("ROMA_PRETRAIN_DATA", str(source_of_4m))
    totals: dict[tuple[str, str], float] = {}
    for reading, (extra, batch, lr) in READINGS.items():
        per_epoch = 3_999_488 // batch  # 15,623 or 1,952 steps
        for spec, epochs in (("scaling_data", {"roma_base": 400}),
                             ("scaling_model", {"roma_tiny": 400, "roma_small": 400, "roma_base": 400, "roma_large": 300})):
            plan = dry_json(capsys, spec, "--profile", "example_a100", *extra)
            largest = [r for r in plan["runs"] if r["data_size"] == 3_999_488]
            assert {r["config"]["model"]["name"]: r["steps"] for r in largest} == \
                {m: e * per_epoch for m, e in epochs.items()}
            assert all(r["global_batch"] == batch and r["peak_lr"] == pytest.approx(lr) for r in plan["runs"])
            totals[spec, reading] = plan["total_gpu_hours"]
            assert main([spec, "--dry-run", "--profile", "example_a100", *extra]) == 0
            out = capsys.readouterr().out
            row = next(line for line in out.splitlines() if "roma_base-3.999M" in line)
            assert f"  {batch}  " in row and f"{lr:.2e}".replace("e-0", "e-") in row and f"{400 * per_epoch:,}" in row
            assert f"total: {totals[spec, reading]:,.0f} A100-hours for {len(plan['runs'])} of" in out
    # the budget follows the images seen at a per-image throughput, not the batch: the readings cost the
    # same but for the images each epoch's last partial step drops (fewer at 2,048)
    for spec in ("scaling_data", "scaling_model"):
        assert totals[spec, "arm_2048"] < totals[spec, "global_256"] == pytest.approx(totals[spec, "arm_2048"], rel=2e-3)


def test_missing_data_is_an_error_in_a_real_launch(no_env, capsys, tmp_path):
    assert main(["scaling_data", "--executor", "debug", "--set", f"output_root={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert "environment variable ROMA_PRETRAIN_DATA is not set" in err and "nothing was launched" in err
    assert not list(tmp_path.iterdir())


def test_a_subset_larger_than_present_data_warns_in_a_dry_run_and_fails_a_launch(no_env, capsys, tmp_path):
    data = tmp_path / "images.txt"
    data.write_text("".join(f"c/{i}.jpg\n" for i in range(1000)))
    args = ["scaling_data", "--data-root", str(data), "--set", f"output_root={tmp_path / 'out'}",
            "eval.probes=[]", "--only", "*-62.5K-*"]
    plan = dry_json(capsys, *args)
    assert plan["runs"][0]["data_size"] == 62_500
    assert any("subset of 62500 images is larger than the dataset" in w for w in plan["warnings"])
    assert main([*args, "--executor", "debug"]) == 2
    assert "subset of 62500 images is larger than the dataset" in capsys.readouterr().err
    # with data and no subset, the data size is the images under the root less the 256 held out
    plan = dry_json(capsys, "quickstart", "--data-root", str(data), "--set", "data.subset=null")
    assert plan["runs"][0]["data_size"] == 1000 - 256 and plan["runs"][0]["steps"] == 200


def test_a_launch_whose_ranks_do_not_divide_the_global_batch_is_refused(no_env, capsys, monkeypatch, tmp_path):
    data = tmp_path / "images.txt"
    data.write_text("".join(f"c/{i}.jpg\n" for i in range(100)))
    monkeypatch.setenv("WORLD_SIZE", "3")  # as under torchrun --nproc_per_node 3
    # No held-out set: 100 listed images could not hold the quickstart's 256; this test is about the batch.
    args = ["quickstart", "--data-root", str(data), "--set", "data.subset=null", "--set", "data.heldout_size=0",
            "--set", "train.val_every_steps=0", f"output_root={tmp_path / 'out'}"]
    assert main([*args, "--executor", "debug"]) == 2
    assert "train.global_batch 32 cannot be split evenly over 3 ranks" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    plan = dry_json(capsys, *args)
    assert plan["runs"][0]["layout"] is None and "cannot be split" in plan["runs"][0]["estimate"]["error"]


def test_dry_run_on_a_fresh_clone_with_no_data_and_no_environment(tmp_path):
    """No data, no ROMA_* variables, not even HOME: every paper spec plans on both example clusters."""
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    code = ("import sys, json, io, contextlib\n"
            "from roma.launch.cli import main\n"
            "for spec in ('scaling_data', 'scaling_model', 'ablation_ares_msp', 'ablation_descriptor',\n"
            "             'ablation_msp_scales', 'ablation_lambda'):\n"
            "    for prof in ('example_a100', 'example_h100_multinode'):\n"
            "        buf = io.StringIO()\n"
            "        with contextlib.redirect_stdout(buf):\n"
            "            rc = main([spec, '--dry-run', '--json', '--profile', prof])\n"
            "        assert rc == 0, (spec, prof, rc)\n"
            "        runs = json.loads(buf.getvalue())['runs']\n"
            "        assert all(r['estimate']['gpu_hours'] > 0 and r['steps'] > 0 for r in runs), (spec, prof)\n"
            "print('ok')\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stdout[-2000:] + out.stderr[-3000:]


# ------------------------------------------------------------------ the fixed-steps control

def test_train_steps_fixes_the_schedule_whatever_the_data_size():
    t = TrainConfig(epochs=8, warmup_epochs=0.5, global_batch=32, steps=312)
    sizes = (312, 625, 1250, 2500, 5000)
    plans = [schedule(t, n) for n in sizes]
    assert {(s.total_steps, s.warmup_steps, s.images_seen) for s in plans} == {(312, 20, 312 * 32)}
    # at 1,250 images the fixed-steps schedule is the epoch schedule (8 epochs of 39 steps, 20 warm-up)
    epochs = schedule(dataclasses.replace(t, steps=None), 1250)
    assert (epochs.total_steps, epochs.warmup_steps) == (312, 20)
    assert [schedule(dataclasses.replace(t, steps=None), n).total_steps for n in sizes] == [72, 152, 312, 624, 1248]


def test_train_steps_is_checked_and_out_of_the_id_when_unset(no_env):
    from roma.validation import ConfigError

    with pytest.raises(ConfigError, match="train.steps: must be positive"):
        load_spec("scaling_data_micro", {"train.steps": 0}, dry_run=True)
    with pytest.raises(ConfigError, match="train.steps: 100 fixes the step budget and train.max_steps 50"):
        load_spec("scaling_data_micro", {"train.steps": 100, "train.max_steps": 50}, dry_run=True)
    cfg = load_spec("scaling_data_micro", dry_run=True).runs[0]
    assert "steps" not in cfg.identity()["train"]  # unset: every pinned run id is unchanged
    fixed = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, steps=312))
    assert fixed.identity()["train"]["steps"] == 312 and fixed.run_id != cfg.run_id


def test_the_fixed_steps_spec_gives_every_subset_the_same_steps(no_env, capsys, tmp_path):
    fixed = dry_json(capsys, "scaling_data_micro_fixed_steps")["runs"]
    epochs = dry_json(capsys, "scaling_data_micro")["runs"]
    assert len(fixed) == 15 and {r["data_size"] for r in fixed} == {312, 625, 1250, 2500, 5000}
    assert {(r["steps"], r["images_seen"]) for r in fixed} == {(312, 312 * 32)}
    assert [r["config"]["data"]["subset"] for r in fixed] == [r["config"]["data"]["subset"] for r in epochs]
    assert len({r["steps"] for r in epochs}) == 5  # the confounded axis it controls
    assert {r["epochs"] for r in fixed if r["data_size"] == 5000} == {2.0}
    assert all(r["name"].endswith("-fixed_steps") for r in fixed)
    # the key reaches the loop: a run on 16 images with 4 per step trains 6 steps (1.5 epochs)
    from test_train_helpers import nano_config, write_pngs

    from roma.train.pretrain import pretrain

    cfg = nano_config(write_pngs(tmp_path / "pool", n=16), tmp_path / "out", steps=6)
    res = pretrain(cfg, tmp_path / "out" / "run")
    assert (res["total_steps"], res["step"], res["epoch"]) == (6, 6, 1)
