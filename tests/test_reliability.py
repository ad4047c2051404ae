"""Regression tests of issue 14's reliability defects: each fails on b209b9d and passes after.

1 a run is claimed atomically   2 safe experiment/spec names   3 MLflow status FAILED/KILLED, failure
tags cleared by a finished retry   4 impossible values refused at validation   5 malformed spec files
7 evaluation follows the bad-image policy; a failed evaluation keeps the finished pretraining
8 `launch.py ui` takes the launch's overrides (--data-root)
"""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from roma.config import EvalConfig, ModelConfig, ProbeConfig
from roma.launch import cli
from roma.launch.status import read_status
from roma.spec import load_spec, parse_set
from roma.validation import ConfigError
from test_train_helpers import nano_config, write_pngs

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def tiny_spec(tmp_path):
    """A one-run micro spec over a manifest of 300 (unchecked) paths, outputs in tmp."""
    (tmp_path / "imgs.txt").write_text("".join(f"a/{i}.jpg\n" for i in range(300)))
    spec = tmp_path / "tiny.yaml"
    spec.write_text(yaml.safe_dump({"base": "micro", "output_root": str(tmp_path / "out"), "data.subset": 100}))
    return spec, tmp_path / "imgs.txt"


# ------------------------------------------------------------------ 1: one claim per run

SLOW_FAKE = textwrap.dedent('''
    import os, time

    def slow(cfg, hooks=None):
        with open(os.environ["FAKE_LOG"], "a") as fh:
            fh.write(f"{cfg.run_id} start {os.getpid()}\\n")
        time.sleep(float(os.environ.get("FAKE_SECONDS", "6")))
        return {"step": 1, "final_loss": 0.5}
''')


def test_two_simultaneous_launches_compute_a_run_once(tiny_spec, tmp_path):
    spec, manifest = tiny_spec
    (tmp_path / "fake_slow.py").write_text(SLOW_FAKE)
    log = tmp_path / "calls.log"
    env = {**os.environ, "FAKE_LOG": str(log), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), str(REPO), os.environ.get("PYTHONPATH")]))}
    cmd = [sys.executable, str(REPO / "experiments" / "launch.py"), str(spec), "--data-root", str(manifest),
           "--executor", "local", "--execute", "fake_slow:slow", "--skip-data-check"]  # unchecked paths
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    starts = log.read_text().splitlines()
    assert len(starts) == 1, (starts, outs)  # computed once, by one process
    text = "\n".join(outs)
    assert "already being computed" in text or "active" in text, outs
    run = load_spec(spec, data_root=str(manifest)).runs[0]
    assert read_status(run.run_dir)["state"] == "finished"


def test_claimed_run_is_reported_active_and_left_alone(tiny_spec, monkeypatch, tmp_path):
    from roma.launch.claim import RunClaimed, claim, holder
    from roma.launch.job import run_one
    from roma.launch.plan import plan

    spec, manifest = tiny_spec
    run = load_spec(spec, data_root=str(manifest)).runs[0]
    with claim(run.run_dir) as me:
        assert holder(run.run_dir)["pid"] == me["pid"] == os.getpid()
        assert plan([run])[0].action == "skip" and plan([run])[0].why == "active"
        with pytest.raises(RunClaimed, match="already being computed"):
            run_one(run, "os:getcwd")
        assert read_status(run.run_dir) is None  # nothing recorded by the loser
    assert holder(run.run_dir) is None  # released with the process's hold (also when it dies)


# ------------------------------------------------------------------ 2: names are one folder

@pytest.mark.parametrize("name", ["../../x", "/tmp/abs", "", "a/b", ".."])
def test_unsafe_experiment_names_are_refused(tiny_spec, name):
    spec, manifest = tiny_spec
    with pytest.raises(ConfigError, match=r"--set: experiment: .* not a safe name"):
        load_spec(spec, parse_set([f"experiment={name}"]), data_root=str(manifest))


def test_unsafe_spec_names_are_refused(tmp_path, capsys):
    from roma.spec import SPEC_DIR

    (tmp_path / "evil.yaml").write_text("base: micro\n")
    name = os.path.relpath(tmp_path / "evil", SPEC_DIR)  # a *name* that walks out of experiments/specs
    assert cli.main([name, "--dry-run"]) == 2
    assert f"spec name {name!r}" in capsys.readouterr().err


def test_force_never_deletes_outside_the_study(tiny_spec):
    from roma.launch.plan import clear_for_rerun

    spec, manifest = tiny_spec
    run = load_spec(spec, data_root=str(manifest)).runs[0]
    escaped = dataclasses.replace(run, experiment="../escape")  # built around validation
    with pytest.raises(ValueError, match="refusing to delete"):
        clear_for_rerun(escaped)


# ------------------------------------------------------------------ 3 + 7: MLflow status, failed evaluations

def _failing_probe(calls):
    def probe(encoder_ckpt, probe_cfg, model_cfg, out_dir, device):
        calls.append("probe")
        if len(calls) == 1:
            raise RuntimeError("probe data unreachable")
        return {"aid_oa_tr50": 50.0}
    return probe


def test_failed_evaluation_keeps_pretraining_and_a_finished_retry_clears_failure(tmp_path, monkeypatch):
    import torch
    from mlflow.tracking import MlflowClient

    import roma.eval.classification as cls
    from roma.launch.job import run_one
    from roma.tracking import tracking_uri

    calls: list[str] = []
    monkeypatch.setattr(cls, "run_probe", _failing_probe(calls))
    cfg = nano_config(write_pngs(tmp_path / "imgs", n=16), tmp_path / "out", epochs=1, ckpt_every_steps=100)
    cfg = dataclasses.replace(cfg, eval=EvalConfig(probes=(ProbeConfig(dataset="aid", root="x"),)))
    with pytest.raises(RuntimeError, match="probe data unreachable"):
        run_one(cfg, executor="debug")
    rd = cfg.run_dir
    st = read_status(rd)
    assert st["state"] == "failed" and st["stage"] == "eval" and "probe data unreachable" in st["reason"]
    enc = torch.load(rd / "encoder.pt", map_location="cpu", weights_only=True)  # usable as it is
    assert enc["model_name"] == cfg.model.name
    client = MlflowClient(tracking_uri(cfg))
    (run,) = client.search_runs([client.get_experiment_by_name(cfg.experiment).experiment_id])
    assert run.info.status == "FAILED"  # MLflow's own status, not only a tag
    assert run.data.tags["failure_stage"] == "eval" and "probe data unreachable" in run.data.tags["failure_reason"]
    assert run.data.tags["encoder_path"] == str((rd / "encoder.pt").resolve())
    loss_steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, "train/loss"))

    result = run_one(cfg, executor="debug")  # the retry: only the evaluation runs again
    assert calls == ["probe", "probe"] and result["aid_oa_tr50"] == 50.0
    run = client.get_run(run.info.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["state"] == "finished"
    assert "failure_reason" not in run.data.tags and "failure_stage" not in run.data.tags
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "train/loss")) == loss_steps
    assert read_status(rd)["state"] == "finished"


def test_interrupted_run_is_killed_in_mlflow(tmp_path):
    from mlflow.tracking import MlflowClient

    from roma.run import execute
    from roma.tracking import tracking_uri

    cfg = nano_config(write_pngs(tmp_path / "imgs", n=16), tmp_path / "out", epochs=1)

    def interrupting(c, d, seed):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        execute(cfg, data=interrupting)
    client = MlflowClient(tracking_uri(cfg))
    (run,) = client.search_runs([client.get_experiment_by_name(cfg.experiment).experiment_id])
    assert run.info.status == "KILLED" and run.data.tags["state"] == "cancelled"


def test_killed_job_is_failed_in_mlflow(tiny_spec, tmp_path):
    """A job killed from outside (kill -9, OOM) cannot record its end: the launcher does, in MLflow too."""
    from mlflow.tracking import MlflowClient

    from roma.tracking import tracking_uri

    spec, manifest = tiny_spec
    (tmp_path / "fake_die.py").write_text(textwrap.dedent('''
        import os
        from roma.tracking import Tracker

        def die(cfg, hooks=None):
            Tracker.open(cfg, cfg.run_dir)  # the MLflow run exists, RUNNING
            os._exit(9)
    '''))
    sys.path.insert(0, str(tmp_path))
    try:
        assert cli.main([str(spec), "--data-root", str(manifest), "--executor", "local",
                         "--execute", "fake_die:die", "--skip-data-check"]) == 1
    finally:
        sys.path.remove(str(tmp_path))
    run_cfg = load_spec(spec, data_root=str(manifest)).runs[0]
    client = MlflowClient(tracking_uri(run_cfg))
    (run,) = client.search_runs([client.get_experiment_by_name(run_cfg.experiment).experiment_id])
    assert run.info.status == "FAILED" and "code 9" in run.data.tags["failure_reason"]


# ------------------------------------------------------------------ 4: impossible values

@pytest.mark.parametrize("setting, key", [
    ("train.blr=.nan", "train.blr"),
    ("train.clip_grad=-1", "train.clip_grad"),
    ("train.weight_decay=-0.05", "train.weight_decay"),
    ("data.max_bad_fraction=1.5", "data.max_bad_fraction"),
    ("data.max_bad_fraction=-0.1", "data.max_bad_fraction"),
    ("data.num_workers=-1", "data.num_workers"),
    ("data.crop_scale=[0.0,1.0]", "data.crop_scale"),
    ("data.crop_scale=[0.8,0.2]", "data.crop_scale"),
    ("data.crop_scale=[0.5,1.5]", "data.crop_scale"),
    ("train.betas=[0.9,1.0]", "train.betas"),
    ("msp.weight=.inf", "msp.weight"),
])
def test_impossible_values_are_refused_naming_origin_and_key(tiny_spec, setting, key):
    spec, manifest = tiny_spec
    with pytest.raises(ConfigError) as e:
        load_spec(spec, parse_set([setting]), data_root=str(manifest))
    assert any(p.startswith(f"--set: {key}:") for p in e.value.problems), e.value.problems


def test_impossible_value_in_a_file_names_the_file(tmp_path):
    spec = tmp_path / "bad.yaml"
    spec.write_text("base: micro\ntrain: {clip_grad: -3}\n")
    with pytest.raises(ConfigError, match=rf"{spec}: train.clip_grad: must be positive"):
        load_spec(spec, check_data=False)


def test_subset_larger_than_a_shard_source_is_refused(tmp_path):
    from roma.data.shards import pack

    imgs = write_pngs(tmp_path / "imgs", n=6)
    pack(imgs, tmp_path / "shards", shard_size=4)  # 6 images in 2 shards
    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump({"base": "micro", "data.subset": 7,
                                    "data.root": str(tmp_path / "shards" / "*.tar")}))
    with pytest.raises(ConfigError, match=r"data.subset: subset of 7 images is larger than .* \(6 images\)"):
        load_spec(spec, data_root=None)
    spec.write_text(yaml.safe_dump({"base": "micro", "data.subset": 6, "eval": {"probes": []},
                                    "data.root": str(tmp_path / "shards" / "*.tar")}))
    assert load_spec(spec).runs[0].data.subset == 6


# ------------------------------------------------------------------ 5: malformed spec files

def test_non_utf8_spec_is_one_line_naming_the_file(tmp_path, capsys):
    spec = tmp_path / "latin1.yaml"
    spec.write_bytes("base: micro\ndescription: caf\xe9\n".encode("latin-1"))
    assert cli.main([str(spec), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert f"{spec.resolve()}: not a UTF-8 text file" in err and "Traceback" not in err


@pytest.mark.parametrize("text", ["", "# only a comment\n", "\n\n"])
def test_empty_spec_is_refused(tmp_path, text):
    spec = tmp_path / "empty.yaml"
    spec.write_text(text)
    with pytest.raises(ConfigError, match="the spec is empty"):
        load_spec(spec, check_data=False)


# ------------------------------------------------------------------ 7: evaluation images

def _class_folder(root: Path, per_class: int = 6) -> Path:
    rng = np.random.default_rng(0)
    for c in range(3):
        (root / f"c{c}").mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(root / f"c{c}/{i}.png")
    return root


def test_probe_skips_counts_and_limits_unreadable_images(tmp_path):
    from roma.data import BadImageError
    from roma.eval import run_probe

    root = _class_folder(tmp_path / "ds")
    (root / "c1" / "broken.png").write_bytes(b"not a png")  # 1 of 19 images
    micro = ModelConfig(name="roma_micro_tiny", img_size=96, patch_size=8)
    cfg = ProbeConfig(dataset="toy", root=str(root), img_size=32, epochs=2, batch_size=8, eval_every=1,
                      lr_grid=(1.0,), max_bad_fraction=0.1)
    metrics = run_probe(None, cfg, micro, tmp_path / "ok", "cpu")
    assert 0.0 <= metrics["toy_oa_tr50"] <= 100.0
    assert (tmp_path / "ok" / "bad_images.txt").read_text().split() == [str(root / "c1" / "broken.png")]
    assert json.loads((tmp_path / "ok" / "probe_toy.json").read_text())["n_images"] == 18
    with pytest.raises(BadImageError, match="1 of 19 images are unreadable"):
        run_probe(None, dataclasses.replace(cfg, max_bad_fraction=0.0), micro, tmp_path / "strict", "cpu")


# ------------------------------------------------------------------ 8: the UI finds the launched runs

def test_ui_takes_the_launch_overrides(tiny_spec, tmp_path):
    from roma.launch import ui

    spec, manifest = tiny_spec
    launched = load_spec(spec, parse_set(["train.seed=3"]), data_root=str(manifest)).runs
    args = ui.parse_args([str(spec), "--set", "train.seed=3", "--data-root", str(manifest)])
    target = ui.resolve_target(args)
    assert target.run_ids == tuple(r.run_id for r in launched)
    plain = ui.resolve_target(ui.parse_args([str(spec)]))
    assert plain.run_ids != target.run_ids  # without --data-root the ids (and so the runs) differ
