"""MLflow metric keys grouped by stage (train/, val/, eval/), the one mapping back to plain names, and
the analysis reading old (plain) and new (grouped) stores alike."""
from __future__ import annotations

import pytest

from roma.metric_names import candidates, mlflow_key, plain_metrics, plain_name

CASES = [("loss", "train", "train/loss"), ("loss_block_s2", "train", "train/loss_block_s2"),
         ("lr", "train", "train/lr"), ("images_per_s", "train", "train/images_per_s"),
         ("val_loss", "train", "val/loss"), ("val_loss_token", "train", "val/loss_token"),
         ("final_loss", "train", "train/final_loss"), ("train_flops", "train", "train/flops"),
         ("pretrain_flops_per_image", "train", "train/flops_per_image"), ("device_hours", "train", "train/device_hours"),
         ("aid_oa_tr50", "eval", "eval/aid_oa_tr50"), ("random_aid_oa_tr50_std", "eval", "eval/random_aid_oa_tr50_std"),
         ("oscd_f1", "eval", "eval/oscd_f1")]


@pytest.mark.parametrize("name,stage,key", CASES)
def test_keys_group_by_stage_and_map_back(name, stage, key):
    assert mlflow_key(name, stage) == key and plain_name(key) == name
    assert candidates(name, stage) == (key, name)


def test_plain_keys_of_older_stores_stay_and_bad_input_is_named():
    assert plain_name("aid_oa_tr50") == "aid_oa_tr50" and plain_name("system/cpu") == "system/cpu"
    assert plain_metrics({"eval/aid_oa_tr50": 41.0, "val/loss": 0.9, "final_loss": 1.0, "train/final_loss": 1.1}) == \
        {"aid_oa_tr50": 41.0, "val_loss": 0.9, "final_loss": 1.1}  # the grouped key wins
    with pytest.raises(ValueError, match="stage"):
        mlflow_key("loss", "test")
    with pytest.raises(ValueError, match="already grouped"):
        mlflow_key("train/loss")


def test_tracker_logs_grouped_keys_tags_the_experiment_and_analysis_reads_old_and_new(tmp_path):
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    from analysis.runs import load_mlflow
    from roma.config import RunConfig
    from roma.tracking import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG, Tracker, tracking_uri

    cfg = RunConfig(experiment="groups", output_root=str(tmp_path / "out"))
    uri = tracking_uri(cfg)
    client = MlflowClient(uri)
    old = client.create_experiment("groups")  # an experiment from an older store: untagged, plain keys
    r = client.create_run(old, run_name="old")
    client.log_batch(r.info.run_id, metrics=[Metric(k, v, 0, 0) for k, v in
                                             {"aid_oa_tr50": 40.0, "val_loss": 1.25, "final_loss": 1.5, "loss": 2.0}.items()],
                     params=[Param(k, v) for k, v in {"model.name": "roma_micro_tiny", "param_count": "1000",
                                                      "data_size": "312"}.items()])
    client.set_terminated(r.info.run_id, "FINISHED")

    cfg.run_dir.mkdir(parents=True)
    tr = Tracker.open(cfg, cfg.run_dir)
    assert client.get_experiment(old).tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND  # tagged on reopening
    tr.log_params({"model.name": "roma_micro_tiny", "param_count": 1000, "data_size": 625})
    tr.log_step(1, {"loss": 1.0, "val_loss": 0.9, "lr": 1e-3})
    tr.flush()
    tr.log_metrics({"final_loss": 1.0}, step=1, stage="train")
    tr.log_metrics({"aid_oa_tr50": 45.0}, step=1, stage="eval")
    tr.end("finished")
    keys = set(client.get_run(tr.run_id).data.metrics)
    assert keys == {"train/loss", "val/loss", "train/lr", "train/final_loss", "eval/aid_oa_tr50"}
    assert tr.metric_history("loss") == [(1, 1.0)] and tr.last_logged_step() == 1

    df = load_mlflow("groups", uri).set_index("data_size")
    assert df.loc[312, ["aid_oa_tr50", "val_loss", "final_loss"]].tolist() == [40.0, 1.25, 1.5]
    assert df.loc[625, ["aid_oa_tr50", "val_loss", "final_loss"]].tolist() == [45.0, 0.9, 1.0]

    fresh = RunConfig(experiment="new_exp", output_root=str(tmp_path / "out"))
    fresh.run_dir.mkdir(parents=True)
    Tracker.open(fresh, fresh.run_dir).end("finished")
    assert MlflowClient(tracking_uri(fresh)).get_experiment_by_name("new_exp").tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND
