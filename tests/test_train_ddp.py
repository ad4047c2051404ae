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
    cfg = nano_config(write_pngs(tmp_path / "imgs", n=24), tmp_path / "out", epochs=2)
    (tmp_path / "cfg.json").write_text(json.dumps(cfg.to_dict()))
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(HELPER.parent), os.environ.get("PYTHONPATH")]))}
    out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                          "--master_port", "29517", str(HELPER), str(tmp_path / "cfg.json")],
                         env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    rd = tmp_path / "out" / cfg.experiment / cfg.run_id
    last = torch.load(rd / "last.pt", map_location="cpu", weights_only=True)
    assert last["step"] == 6  # 24 images / 2 ranks / batch 4 = 3 steps per epoch, 2 epochs
    from mlflow.tracking import MlflowClient

    from roma.tracking import tracking_uri

    client = MlflowClient(tracking_uri(cfg))
    runs = client.search_runs([client.get_experiment_by_name(cfg.experiment).experiment_id])
    assert len(runs) == 1 and runs[0].data.params["effective_batch"] == "8"
    assert sorted(m.step for m in client.get_metric_history(runs[0].info.run_id, "loss")) == list(range(1, 7))
