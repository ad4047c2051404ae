"""Two CPU ranks (gloo) under torchrun: one MLflow run, rank 0's checkpoint, disjoint shards."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from test_train_helpers import nano_config, write_pngs

HELPER = Path(__file__).with_name("test_train_helpers.py")


@pytest.mark.slow
def test_two_rank_ddp_run(tmp_path):
    cfg = nano_config(write_pngs(tmp_path / "imgs", n=24), tmp_path / "out", epochs=2, global_batch=8)
    (tmp_path / "cfg.json").write_text(json.dumps(cfg.to_dict()))
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(HELPER.parent), os.environ.get("PYTHONPATH")]))}
    out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                          "--master_port", "29517", str(HELPER), str(tmp_path / "cfg.json")],
                         env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    rd = tmp_path / "out" / cfg.experiment / cfg.run_id
    last = torch.load(rd / "last.pt", map_location="cpu", weights_only=True)
    assert last["step"] == 6  # 24 images / global batch 8 = 3 steps per epoch, 2 epochs
    from mlflow.tracking import MlflowClient

    from roma.tracking import tracking_uri

    client = MlflowClient(tracking_uri(cfg))
    runs = client.search_runs([client.get_experiment_by_name(cfg.experiment).experiment_id])
    params = runs[0].data.params
    assert len(runs) == 1 and (params["global_batch"], params["world_size"], params["device_batch"],
                               params["accum_steps"]) == ("8", "2", "4", "1")
    assert sorted(m.step for m in client.get_metric_history(runs[0].info.run_id, "train/loss")) == list(range(1, 7))


def _run(args: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(HELPER.parent), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_resume_on_two_ranks_after_one_keeps_the_global_batch_and_the_sampler_position(tmp_path):
    """3 steps on 1 process (2 micro-batches of 4), interrupted, resumed from step 2 on 2 gloo ranks
    (1 micro-batch of 4 each): the same images make every step, so it ends where the uninterrupted
    1-process run ends (up to float summation order), and MLflow shows both layouts."""
    imgs = write_pngs(tmp_path / "imgs", n=24)
    train = dict(epochs=2, global_batch=8, max_device_batch=4, ckpt_every_steps=2)
    ref, cut = (nano_config(imgs, tmp_path / name, **train) for name in ("ref", "cut"))
    assert ref.run_id == cut.run_id
    for name, cfg in (("ref", ref), ("cut", cut)):
        (tmp_path / f"{name}.json").write_text(json.dumps(cfg.to_dict()))
    done = _run([str(HELPER), str(tmp_path / "ref.json")])
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    stopped = _run([str(HELPER), str(tmp_path / "cut.json"), "0", "3"])
    assert stopped.returncode != 0 and "stopped at step 3" in stopped.stdout + stopped.stderr
    rd = lambda cfg: tmp_path / Path(cfg.output_root).name / cfg.experiment / cfg.run_id  # noqa: E731
    half = torch.load(rd(cut) / "last.pt", map_location="cpu", weights_only=True)
    assert (half["step"], half["sampler"]["position"], half["sampler"]["world_size"]) == (2, 16, 1)
    resumed = _run(["-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29519",
                    str(HELPER), str(tmp_path / "cut.json")])
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "resuming at step 2 on 2 rank(s) (last.pt: 1)" in resumed.stdout
    a = torch.load(rd(ref) / "last.pt", map_location="cpu", weights_only=True)
    b = torch.load(rd(cut) / "last.pt", map_location="cpu", weights_only=True)
    assert a["step"] == b["step"] == 6 and b["sampler"]["world_size"] == 2
    for k in a["model"]:
        torch.testing.assert_close(b["model"][k], a["model"][k], rtol=1e-3, atol=1e-4, msg=k)
    assert a["last_loss"] == pytest.approx(b["last_loss"], rel=1e-4)

    from mlflow.tracking import MlflowClient

    from roma.tracking import tracking_uri

    client = MlflowClient(tracking_uri(cut))
    run_id = (rd(cut) / "mlflow_run_id").read_text().strip()
    params = client.get_run(run_id).data.params
    assert (params["global_batch"], params["world_size"], params["device_batch"], params["accum_steps"],
            params["images_seen"]) == ("8", "1", "4", "2", "48")  # the first start's layout
    # each start's layout is a param of its own (not a metric): the first start at 0, the resume at step 2
    assert (params["layout.step0"], params["layout.step2"]) == ("world_size=1 device_batch=4 accum_steps=2",
                                                        "world_size=2 device_batch=4 accum_steps=1")
    assert not {"world_size", "device_batch", "accum_steps"} & set(client.get_run(run_id).data.metrics)
    assert sorted(m.step for m in client.get_metric_history(run_id, "train/loss")) == list(range(1, 7))


@pytest.mark.slow
def test_a_world_size_that_does_not_divide_the_global_batch_is_refused(tmp_path):
    cfg = nano_config(write_pngs(tmp_path / "imgs", n=24), tmp_path / "out", epochs=1, global_batch=8)
    (tmp_path / "cfg.json").write_text(json.dumps(cfg.to_dict()))
    out = _run(["-m", "torch.distributed.run", "--nproc_per_node", "3", "--master_port", "29521",
                str(HELPER), str(tmp_path / "cfg.json")])
    assert out.returncode != 0
    assert "train.global_batch 8 cannot be split evenly over 3 ranks" in out.stdout + out.stderr
