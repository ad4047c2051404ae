"""A SLURM run interrupted by preemption or its time limit says `requeued` (with its job id) while it
waits in the queue, in status.json, `launch.py status` and MLflow; running again once it restarts."""
from __future__ import annotations

from mlflow.tracking import MlflowClient

from roma.config import RunConfig
from roma.launch import job as jobmod
from roma.launch import slurm
from roma.launch.overview import status_rows
from roma.launch.plan import plan
from roma.launch.status import read_status, write_status
from roma.tracking import RUN_ID_FILE, tracking_uri


def test_interrupted_slurm_run_is_requeued_until_its_job_restarts(tmp_path, monkeypatch):
    cfg = RunConfig(experiment="rq", output_root=str(tmp_path / "out"))
    attempts = []

    def fake_pretrain(cfg, run_dir, hooks=None, data=None):
        attempts.append(read_status(run_dir)["state"])
        if len(attempts) == 1:  # SLURM's USR2: submitit calls checkpoint(), requeues, exits
            jobmod.SlurmRun().checkpoint(cfg.to_dict())
            raise SystemExit(-1)
        return {"step": 10, "final_loss": 0.5, "encoder": str(run_dir / "encoder.pt"), "trained": False}

    monkeypatch.setattr("roma.train.pretrain.pretrain", fake_pretrain)
    monkeypatch.setattr(slurm, "job_state", lambda job_id: "active" if job_id == "4242_3" else None)
    try:
        jobmod.run_one(cfg, executor="slurm", job_id="4242_3")
    except SystemExit:
        pass
    else:
        raise AssertionError("the interrupted job must exit (submitit requeues it)")

    st = read_status(cfg.run_dir)
    assert st["state"] == "requeued" and st["job_id"] == "4242_3" and "SLURM job 4242_3" in st["reason"]
    client = MlflowClient(tracking_uri(cfg))
    run = client.get_run((cfg.run_dir / RUN_ID_FILE).read_text().strip())
    assert run.data.tags["state"] == "requeued" and run.info.status == "SCHEDULED"  # not cancelled
    (row,) = status_rows([cfg])
    assert row.state == "requeued" and row.job == "4242_3" and "4242_3" in row.reason
    assert plan([cfg])[0].action == "skip"  # its queued job will resume it: a relaunch adds nothing

    jobmod.run_one(cfg, executor="slurm", job_id="4242_3")  # the requeued job starts again
    assert attempts == ["running", "running"]
    run = client.get_run(run.info.run_id)
    assert run.data.tags["state"] == "finished" and run.info.status == "FINISHED"
    assert read_status(cfg.run_dir)["state"] == "finished"


def test_requeued_run_whose_job_was_cancelled_in_the_queue_shows_cancelled(tmp_path, monkeypatch):
    cfg = RunConfig(experiment="rq", output_root=str(tmp_path / "out"))
    jobmod.prepare_run_dir(cfg)
    write_status(cfg.run_dir, "requeued", executor="slurm", job_id="77",
                 reason="requeued as SLURM job 77 (preempted or timed out): waiting in the queue")
    monkeypatch.setattr(slurm, "job_state", lambda job_id: "cancelled")
    (row,) = status_rows([cfg])
    assert row.state == "cancelled" and row.reason == "SLURM job 77 ended: cancelled"
    assert plan([cfg])[0].action == "resume"
