"""SLURM preemption: the job's preempt hook saves the last completed step, the run resumes from it."""
from __future__ import annotations

import pytest
import torch

from test_train_helpers import data_fn, nano_config, write_pngs


class _PreemptAt(torch.utils.data.Dataset):
    """Calls the registered preempt hooks, then exits like submitit, when item number `at` is read."""

    def __init__(self, dataset, at: int):
        self.dataset, self.at, self.reads = dataset, at, 0

    def __len__(self):
        return len(self.dataset)

    def set_epoch(self, epoch):
        self.dataset.set_epoch(epoch)

    def __getitem__(self, i):
        self.reads += 1
        if self.reads == self.at:
            from roma.launch import job

            for hook in list(job._preempt_hooks):
                hook()
            raise SystemExit(-1)
        return self.dataset[i]


@pytest.mark.slow
def test_preempt_hook_checkpoints_and_run_resumes(tmp_path):
    from mlflow.tracking import MlflowClient

    from roma.launch import job
    from roma.run import execute
    from roma.tracking import tracking_uri

    cfg = nano_config(write_pngs(tmp_path / "imgs", n=16), tmp_path / "out", epochs=2, ckpt_every_steps=100)
    rd = cfg.run_dir

    def preempting(c, d, seed):
        ds, collate, info = data_fn()(c, d, seed)
        return _PreemptAt(ds, at=4 * 3 + 2), collate, info  # inside step 4: steps 1-3 are complete

    with pytest.raises(SystemExit):
        execute(cfg, job.JobHooks(rd), data=preempting)
    assert not job._preempt_hooks  # unregistered on the way out
    saved = torch.load(rd / "last.pt", map_location="cpu", weights_only=True)
    assert saved["step"] == 3 and saved["sampler"]["position"] == 12
    client = MlflowClient(tracking_uri(cfg))
    mlflow_id = (rd / "mlflow_run_id").read_text().strip()
    run = client.get_run(mlflow_id)
    assert run.info.status == "KILLED" and run.data.tags["state"] == "cancelled"

    result = execute(cfg, job.JobHooks(rd), data=data_fn())  # the requeued job
    assert result["step"] == 8 and result["mlflow_run_id"] == mlflow_id
    steps = sorted(m.step for m in client.get_metric_history(mlflow_id, "train/loss"))
    assert steps == list(range(1, 9))
    assert client.get_run(mlflow_id).info.status == "FINISHED"
