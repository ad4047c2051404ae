"""roma.run.execute: pretraining, then the named evaluations, all in one MLflow run; reruns skip work."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from roma.config import DenseConfig, EvalConfig, ProbeConfig
from test_train_helpers import nano_config, write_pngs


def test_execute_pretrains_evaluates_and_reruns_nothing(tmp_path, monkeypatch):
    import roma.eval.classification as cls
    import roma.eval.dense as dense
    from roma.run import execute

    calls = []

    def fake_probe(encoder_ckpt, probe_cfg, model_cfg, out_dir, device):
        blob = torch.load(encoder_ckpt, map_location="cpu", weights_only=True)
        calls.append(("probe", Path(out_dir).name, blob["model_name"]))
        return {f"{probe_cfg.dataset}_oa_tr50": 41.5}

    def fake_dense(encoder_ckpt, dense_cfg, model_cfg, out_dir, device):
        calls.append(("dense", Path(out_dir).name, Path(encoder_ckpt).name))
        return {"oscd_f1": 12.25}

    monkeypatch.setattr(cls, "run_probe", fake_probe)
    monkeypatch.setattr(dense, "run_dense", fake_dense)
    cfg = nano_config(write_pngs(tmp_path / "imgs", n=16), tmp_path / "out", epochs=1, ckpt_every_steps=100)
    cfg = dataclasses.replace(cfg, eval=EvalConfig(probes=(ProbeConfig(dataset="aid", root="x"),),
                                                   dense=(DenseConfig(task="oscd", root="y"),)))
    result = execute(cfg)
    assert result["step"] == 4 and result["aid_oa_tr50"] == 41.5 and result["oscd_f1"] == 12.25
    assert calls == [("probe", "probe_aid_fast_uni_mean", "test_nano"), ("dense", "dense_oscd_v3", "encoder.pt")]
    rd = cfg.run_dir
    assert json.loads((rd / "eval" / "probe_aid_fast_uni_mean" / "results.json").read_text())["metrics"] == \
        {"aid_oa_tr50": 41.5}

    again = execute(cfg)  # a relaunch: pretraining is done, evaluation results exist
    assert len(calls) == 2 and again["aid_oa_tr50"] == 41.5 and again["step"] == 4
    assert again["final_loss"] == result["final_loss"]

    from mlflow.tracking import MlflowClient

    from roma.tracking import tracking_uri

    client = MlflowClient(tracking_uri(cfg))
    runs = client.search_runs([client.get_experiment_by_name(cfg.experiment).experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED" and run.data.tags["state"] == "finished"
    assert run.data.metrics["eval/aid_oa_tr50"] == 41.5 and run.data.metrics["eval/oscd_f1"] == 12.25
    assert len(client.get_metric_history(run.info.run_id, "train/final_loss")) == 1
    assert int(run.data.params["param_count"]) > 0
    assert run.data.params["data_size"] == "16" and len(run.data.params["data_checksum"]) == 64
    assert run.data.params["scan_backend"] in ("native", "fast", "ref")  # the CPU scans (ROMA_SCAN may force ref)
    assert run.data.tags["encoder_path"] == str((rd / "encoder.pt").resolve())
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "train/loss")) == [1, 2, 3, 4]
    arts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "loss_curve.png"} <= arts
    assert not (rd / "status.json").exists()  # status files are the launcher's (roma.launch.job), not execute's


def test_evaluation_names_are_unique_and_stable():
    from roma.config import RunConfig
    from roma.eval.plan import evaluations

    probes = (ProbeConfig(), ProbeConfig(train_ratios=(0.2,)), ProbeConfig(dataset="ucm"))
    cfg = RunConfig(eval=EvalConfig(probes=probes, random_init_baseline=True, dense=(DenseConfig(),)))
    names = [n for n, *_ in evaluations(cfg)]
    assert len(names) == len(set(names)) == 7
    assert "probe_ucm_fast_uni_mean" in names and "random_probe_ucm_fast_uni_mean" in names
    assert names == [n for n, *_ in evaluations(cfg)]  # the same folders on every relaunch
    assert sum(n.startswith("probe_aid_fast_uni_mean_") for n in names) == 2


    with pytest.raises(ValueError, match="twice"):
        evaluations(RunConfig(eval=EvalConfig(probes=(ProbeConfig(), ProbeConfig()))))
